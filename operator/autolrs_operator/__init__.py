"""The AutoLRSJob operator (kopf). Importing this package registers the handlers."""
