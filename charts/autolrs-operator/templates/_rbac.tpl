{{/*
Rules on namespaced resources: what kopf and the autolrs_operator handlers call in every
namespace they serve. tests/integration/packaging/test_rbac.py checks them against the
operator's code.
*/}}
{{- define "autolrs.rbac.namespacedRules" -}}
# The custom resource: kopf lists and watches it, and patches it (finalizer, handler
# progress annotations); get for the handlers' reads.
- apiGroups: ["autolrs.io"]
  resources: ["autolrsjobs"]
  verbs: ["get", "list", "watch", "patch"]
# Status written by the handlers (phase, conditions, step, stage, LR, restarts).
- apiGroups: ["autolrs.io"]
  resources: ["autolrsjobs/status"]
  verbs: ["get", "patch"]
# Children carry ownerReferences with blockOwnerDeletion=true (kopf.adopt); the
# OwnerReferencesPermissionEnforcement admission plugin requires update on the owner's
# finalizers subresource for that.
- apiGroups: ["autolrs.io"]
  resources: ["autolrsjobs/finalizers"]
  verbs: ["update"]
# Worker pods: created, watched for failures, replaced or removed on scale-down/suspend.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The job's headless rendezvous Service.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "create", "delete"]
# Events on the AutoLRSJob: kopf's handler reports and each stage decision.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
