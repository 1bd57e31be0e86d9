{{/*
Rules on namespaced resources: what kopf and the autolrs_operator handlers call in every
namespace they serve. tests/integration/packaging/test_chart_rbac.py checks them against the
operator's code.
*/}}
{{- define "autolrs.rbac.namespacedRules" -}}
# The custom resource: kopf lists and watches it, and patches it (finalizers, handler
# progress annotations); the controller re-reads a job with get.
- apiGroups: ["autolrs.io"]
  resources: ["autolrsjobs"]
  verbs: ["get", "list", "watch", "patch"]
# Status written by the handlers (phase, conditions, step, stage, LR, restarts).
- apiGroups: ["autolrs.io"]
  resources: ["autolrsjobs/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion=true (kopf.adopt); the
# OwnerReferencesPermissionEnforcement admission plugin requires update on the owner's
# finalizers subresource for that.
- apiGroups: ["autolrs.io"]
  resources: ["autolrsjobs/finalizers"]
  verbs: ["update"]
# Worker pods: listed by label and watched for failures, created, and deleted (replaced,
# scaled down, suspended).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
# The job's headless rendezvous Service (removed with the job through its ownerReference).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create"]
# The Secret a job names in spec.stateStore.secretRef: the operator reads the Redis
# password to follow the job's heartbeat (one named Secret at a time: get, never list).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events on the AutoLRSJob: kopf's handler reports and each stage decision.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
