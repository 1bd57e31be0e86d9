{{/* Chart name, at most 63 characters. */}}
{{- define "autolrs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects, at most 63 characters (DNS label). */}}
{{- define "autolrs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's objects: "<fullname>-<suffix>", at most .max (default 63) characters. */}}
{{- define "autolrs.componentName" -}}
{{- $max := .max | default 63 -}}
{{- $full := include "autolrs.fullname" .root | trunc (int (sub (sub $max 1) (len .suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $full .suffix -}}
{{- end -}}

{{- define "autolrs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "autolrs.labels" -}}
helm.sh/chart: {{ include "autolrs.chart" . }}
app.kubernetes.io/name: {{ include "autolrs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: autolrs
{{- end -}}

{{/* Selector labels of a component; call with (dict "root" $ "component" "operator"). */}}
{{- define "autolrs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "autolrs.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "autolrs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "autolrs.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: repository@digest when a digest is set, else repository:tag. */}}
{{- define "autolrs.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespaces the operator watches when rbac.scope is namespaced, as a list. */}}
{{- define "autolrs.watchedNamespaces" -}}
{{- $namespaces := .Values.rbac.namespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $namespaces) -}}
{{- end -}}

{{/*
The namespaces that hold the bundled Redis's password Secret, as a JSON list: the release
namespace, then stateStore.redis.jobSecretNamespaces, or where that is empty the watched
namespaces (rbac.scope namespaced) or "default" (cluster scope, where the README's example
job goes). Jobs read the password in their own namespace.
*/}}
{{- define "autolrs.redisSecretNamespaces" -}}
{{- $copies := .Values.stateStore.redis.jobSecretNamespaces -}}
{{- if not $copies -}}
{{- if eq .Values.rbac.scope "namespaced" -}}
{{- $copies = include "autolrs.watchedNamespaces" . | fromJsonArray -}}
{{- else -}}
{{- $copies = list "default" -}}
{{- end -}}
{{- end -}}
{{- toJson (concat (list .Release.Namespace) $copies | uniq) -}}
{{- end -}}

{{/* True ("true") when the operator runs with kopf peering (a standby replica). */}}
{{- define "autolrs.peering" -}}
{{- if gt (int .Values.operator.replicas) 1 -}}true{{- end -}}
{{- end -}}

{{- define "autolrs.peeringName" -}}
{{- default (include "autolrs.fullname" .) .Values.operator.peeringName -}}
{{- end -}}

{{/* At most 52 characters: the StatefulSet's controller-revision-hash label appends 11. */}}
{{- define "autolrs.redisName" -}}
{{- include "autolrs.componentName" (dict "root" . "suffix" "redis" "max" 52) -}}
{{- end -}}

{{/* Secret holding the Redis password, or "" when there is none. */}}
{{- define "autolrs.redisSecretName" -}}
{{- if eq .Values.stateStore.mode "bundled" -}}
{{- default (include "autolrs.redisName" .) .Values.stateStore.redis.existingSecret -}}
{{- else if eq .Values.stateStore.mode "external" -}}
{{- .Values.stateStore.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "autolrs.redisPasswordKey" -}}
{{- if eq .Values.stateStore.mode "bundled" -}}
{{- .Values.stateStore.redis.passwordKey -}}
{{- else -}}
{{- .Values.stateStore.external.passwordKey -}}
{{- end -}}
{{- end -}}

{{/* Redis URL (without the password) that the operator hands to jobs; "" with mode none. */}}
{{- define "autolrs.storeURL" -}}
{{- if eq .Values.stateStore.mode "bundled" -}}
{{- printf "redis://%s.%s.svc:6379/0" (include "autolrs.redisName" .) .Release.Namespace -}}
{{- else if eq .Values.stateStore.mode "external" -}}
{{- .Values.stateStore.external.url -}}
{{- end -}}
{{- end -}}
