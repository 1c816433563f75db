{{- /*
Helpers of the jupyterhub-outpost chart.

Helpers that need a component get a dict: (dict "root" $ "component" "sshd"); the others
take the root scope ".". Declared here:
  outpost.name, outpost.fullname, outpost.chart      names
  outpost.labels, outpost.selectorLabels             label sets (selector = immutable subset)
  outpost.namespace.pods                            where the single-user pods go
  outpost.redis.url, outpost.eventsSink, outpost.ksvcHost
  outpost.sshd.hostKeySecret, outpost.validate       checks that fail early
  outpost.sshd.enabled, outpost.sshd.nodePort        upstream's servicessh.enabled / ports.nodePort
  outpost.extras.envFrom                             upstream's extraEnvVarsCMs/-Secrets as envFrom (JSON)
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

{{- define "outpost.redis.url" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s-redis.%s.svc.%s:6379/0" (include "outpost.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- required "redis.url is required when redis.enabled is false (the URL of an existing Redis)" .Values.redis.url }}
{{- end }}
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

{{- /* "true" when the daemon is deployed: sshd.enabled, and upstream's servicessh.enabled. */}}
{{- define "outpost.sshd.enabled" -}}
{{- if and .Values.sshd.enabled (ne .Values.servicessh.enabled false) }}true{{ end }}
{{- end }}

{{- define "outpost.sshd.nodePort" -}}
{{- .Values.servicessh.nodePort | default (dig "ports" "nodePort" "" .Values.servicessh) }}
{{- end }}

{{- define "outpost.extras.envFrom" -}}
{{- $sources := list }}
{{- range .Values.extraEnvVarsCMs }}
{{- $sources = append $sources (dict "configMapRef" (dict "name" .)) }}
{{- end }}
{{- range .Values.extraEnvVarsSecrets }}
{{- $sources = append $sources (dict "secretRef" (dict "name" .)) }}
{{- end }}
{{- toJson $sources }}
{{- end }}

{{- /* Renamed or misplaced keys fail with a message instead of being ignored silently. */}}
{{- define "outpost.validate" -}}
{{- with .Values.extraPythonPackages }}
{{- fail (printf "extraPythonPackages (%s): the functions scale to zero and would run pip at every cold start, so packages are not installed at start here. Build them into the functions image instead: a Containerfile with `FROM <your functions image>` and `RUN pip install --no-cache-dir %s`, push it, run knative/deploy.sh --image <that image>, and remove extraPythonPackages from the values (docs/installation.md)" (join ", " .) (join " " .)) }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts (the public API host name)" }}
{{- end }}
{{- end }}
