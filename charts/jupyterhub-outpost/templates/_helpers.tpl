{{- /*
Helpers of the jupyterhub-outpost chart.

Helpers that need a component get a dict: (dict "root" $ "component" "sshd"); the others
take the root scope ".". Declared here:
  outpost.name, outpost.fullname, outpost.chart      names
  outpost.labels, outpost.selectorLabels             label sets (selector = immutable subset)
  outpost.namespace.pods                            where the single-user pods go
  outpost.eventsSink, outpost.ksvcHost (Redis helpers: redis/_redis.tpl)
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
{{- if eq .Values.backend.type "slurm" }}
{{- $slurm := .Values.backend.slurm | default dict }}
{{- if or (not $slurm.restUrl) (not $slurm.tokenSecret) }}
{{- fail "backend.type slurm needs backend.slurm.restUrl (slurmrestd's URL) and backend.slurm.tokenSecret (a Secret whose key `token` holds its JWT): the functions reach Slurm only through slurmrestd (docs/hpc.md)" }}
{{- end }}
{{- if not .Values.outpostConfig }}
{{- fail "backend.type slurm needs outpostConfig with c.SlurmBackend.job_user (the account jobs run as; docs/hpc.md); the chart writes backend.slurm's values at its top, so outpostConfigPath cannot take its place" }}
{{- end }}
{{- if not (regexMatch "(?m)^c\\.SlurmBackend\\.job_user\\s*=" .Values.outpostConfig) }}
{{- fail "backend.type slurm needs c.SlurmBackend.job_user in outpostConfig: the account jobs run as, never taken from a hub (docs/hpc.md)" }}
{{- end }}
{{- end }}
{{- end }}

{{- /* backend.type slurm: slurmrestd's values as the top lines of outpost_config.py (outpostConfig follows). */}}
{{- define "outpost.slurm.config" -}}
{{- if eq .Values.backend.type "slurm" -}}
# From the chart's backend.slurm values:
c.SlurmBackend.rest_url = {{ .Values.backend.slurm.restUrl | toJson }}
c.SlurmBackend.rest_user = {{ .Values.backend.slurm.restUser | default "slurm" | toJson }}
c.SlurmBackend.rest_api = {{ .Values.backend.slurm.restApi | default "v0.0.38" | toJson }}
{{ end -}}
{{- end }}
