{{- /*
Helpers of the jupyterhub-outpost chart.

Helpers that need a component get a dict: (dict "root" $ "component" "sshd"); the others
take the root scope ".". Declared here:
  outpost.name, outpost.fullname, outpost.chart      names
  outpost.labels, outpost.selectorLabels             label sets (selector = immutable subset)
  outpost.namespace.pods                            where the single-user pods go
  outpost.eventsSink, outpost.ksvcHost (Redis helpers: redis/_redis.tpl)
  outpost.sshd.hostKeySecret, outpost.validate       checks that fail early
*/}}

{{- define "outpost.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* 40 characters leave room for the longest suffix ("-functions-reader"). */}}
{{- define "outpost.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains "outpost" .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-outpost" .Release.Name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "outpost.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "outpost.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outpost.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "outpost.labels" -}}
{{ include "outpost.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "outpost.chart" .root }}
{{- end }}

{{- define "outpost.namespace.pods" -}}
{{- .Values.backend.namespace | default .Release.Namespace }}
{{- end }}

{{- define "outpost.eventsSink" -}}
{{- .Values.functions.eventsSink | default (printf "http://broker-ingress.knative-eventing.svc.%s/%s/%s" .Values.clusterDomain .Release.Namespace (include "outpost.fullname" .)) }}
{{- end }}

{{- /* Cluster-local host of a function's Knative Service, as knative/deploy.sh names it: (dict "root" $ "fn" "start"). */}}
{{- define "outpost.ksvcHost" -}}
{{- printf "%s-%s.%s.svc.%s" (include "outpost.fullname" .root) .fn .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{- define "outpost.sshd.hostKeySecret" -}}
{{- .Values.sshd.hostKey.existingSecret | default (printf "%s-ssh-hostkey" (include "outpost.fullname" .)) }}
{{- end }}

{{- /* Renamed or misplaced keys fail with a message instead of being ignored silently. */}}
{{- define "outpost.validate" -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts (the public API host name)" }}
{{- end }}
{{- end }}
