{{- /*
Redis helpers, by redis.mode (standalone | sentinel | external). All take the root scope ".".
  outpost.redis.env                  what the functions and the daemon read (-env ConfigMap lines)
  outpost.redis.sentinelPasswordEnv  OUTPOST_REDIS_SENTINEL_PASSWORD from the Secret (key optional)
  outpost.redis.url                  standalone's Service URL, or external.url
  outpost.redis.sentinels            "host:port,..." of the bundled or the external sentinels
  outpost.redis.node, outpost.redis.headless, outpost.redis.domain   names of the sentinel mode
  outpost.redis.keptSecret           a password: given, else read back from the Secret, else generated
*/}}

{{- define "outpost.redis.url" -}}
{{- if eq .Values.redis.mode "standalone" }}
{{- printf "redis://%s-redis.%s.svc.%s:6379/0" (include "outpost.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- .Values.redis.external.url }}
{{- end }}
{{- end }}

{{- define "outpost.redis.node" -}}
{{- printf "%s-redis-node" (include "outpost.fullname" .) }}
{{- end }}

{{- define "outpost.redis.headless" -}}
{{- printf "%s-redis-headless" (include "outpost.fullname" .) }}
{{- end }}

{{- /* DNS suffix of the sentinel mode's pods: <node>-<i>.<this>. */}}
{{- define "outpost.redis.domain" -}}
{{- printf "%s.%s.svc.%s" (include "outpost.redis.headless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "outpost.redis.sentinels" -}}
{{- if eq .Values.redis.mode "sentinel" }}
{{- $node := include "outpost.redis.node" . }}
{{- $domain := include "outpost.redis.domain" . }}
{{- $hosts := list }}
{{- range $i := until (int .Values.redis.sentinel.replicas) }}
{{- $hosts = append $hosts (printf "%s-%d.%s:26379" $node $i $domain) }}
{{- end }}
{{- join "," $hosts }}
{{- else }}
{{- join "," .Values.redis.external.sentinels }}
{{- end }}
{{- end }}

{{- /* Exactly one way to reach Redis per mode; the functions' Settings read these names. */}}
{{- define "outpost.redis.env" -}}
{{- $redis := .Values.redis }}
{{- if eq $redis.mode "sentinel" }}
{{- if ge (int $redis.sentinel.minReplicas) (int $redis.sentinel.replicas) }}
{{- fail "redis.sentinel.minReplicas must be below redis.sentinel.replicas (the primary is not a replica)" }}
{{- end }}
OUTPOST_REDIS_SENTINELS: {{ include "outpost.redis.sentinels" . | quote }}
OUTPOST_REDIS_SENTINEL_MASTER: {{ $redis.sentinel.masterName | quote }}
OUTPOST_REDIS_MIN_REPLICAS: {{ $redis.sentinel.minReplicas | quote }}
{{- else if eq $redis.mode "external" }}
{{- $external := $redis.external }}
{{- if eq (empty $external.url) (empty $external.sentinels) }}
{{- fail "redis.mode external needs exactly one of redis.external.url (an existing Redis) and redis.external.sentinels (its sentinels)" }}
{{- end }}
{{- if $external.url }}
OUTPOST_REDIS_URL: {{ $external.url | quote }}
{{- else }}
OUTPOST_REDIS_SENTINELS: {{ include "outpost.redis.sentinels" . | quote }}
OUTPOST_REDIS_SENTINEL_MASTER: {{ required "redis.external.masterName is required with redis.external.sentinels (the primary's name there)" $external.masterName | quote }}
{{- end }}
{{- if $external.minReplicas }}
OUTPOST_REDIS_MIN_REPLICAS: {{ $external.minReplicas | quote }}
{{- end }}
{{- else }}
OUTPOST_REDIS_URL: {{ include "outpost.redis.url" . | quote }}
{{- end }}
{{- end }}

{{- define "outpost.redis.sentinelPasswordEnv" -}}
- name: OUTPOST_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "outpost.fullname" . }}-redis, key: sentinel-password, optional: true}
{{- end }}

{{- /* (dict "root" $ "key" "password" "given" .Values.redis.password): generated once, read back on upgrades. */}}
{{- define "outpost.redis.keptSecret" -}}
{{- $value := .given }}
{{- if not $value }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (printf "%s-redis" (include "outpost.fullname" .root)) }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- $value = index $existing.data .key | b64dec }}
{{- else }}
{{- $value = randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- $value }}
{{- end }}
