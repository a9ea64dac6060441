{{/*
Names are cut to 63 characters because some Kubernetes name fields are limited to a DNS label.
*/}}
{{- define "chatflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chatflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the operator's own objects; the suffix tells them apart from the <set>-producer and
<set>-consumer-* objects in the same namespace.
*/}}
{{- define "chatflow.operatorName" -}}
{{- $full := include "chatflow.fullname" . }}
{{- if hasSuffix "operator" $full }}
{{- $full }}
{{- else }}
{{- printf "%s-operator" ($full | trunc 54 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{- define "chatflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The component label keeps the operator's objects apart from the producer and consumer objects the
operator creates, which carry the same app.kubernetes.io/name.
*/}}
{{- define "chatflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "chatflow.labels" -}}
helm.sh/chart: {{ include "chatflow.chart" . }}
{{ include "chatflow.selectorLabels" . }}
app.kubernetes.io/part-of: chatflow
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "chatflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chatflow.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
`--set image.tag=1` arrives as an int64, which %s would print in Go's type-annotated form;
toString renders it as typed. (A YAML float such as `tag: 1.10` is already 1.1 when the chart
sees it: quote such tags in values files.)
*/}}
{{- define "chatflow.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/*
What the operator does with the objects it reconciles; bound cluster-wide or in watchNamespace.
*/}}
{{- define "chatflow.reconcileRules" -}}
- apiGroups: ["chatflow.dev"]
  resources: ["chatroomsets"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["chatflow.dev"]
  resources: ["chatroomsets/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers.
- apiGroups: ["chatflow.dev"]
  resources: ["chatroomsets/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# One NetworkPolicy per set: ingress to its pods only on their service and metrics ports.
# ...and, when the set asks for one, an Ingress in front of its edge (producer) Service.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies", "ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Two PodDisruptionBudgets per set: drains take one producer pod and one shard at a time.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The shard autoscaler finds its shards' pods to read their per-room broadcast counters.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
