#!/usr/bin/env bash
# Deploy the Outpost functions and their eventing into the namespace of the Helm release.
#
#   knative/deploy.sh --namespace outpost --image registry.example.org/outpost/functions:0.1.0
#   knative/deploy.sh ... --manifests     # the same with `kubectl apply -f` only
#   knative/deploy.sh ... --dry-run       # print the commands, change nothing
#   knative/deploy.sh ... --release NAME  # the chart's release, when the namespace has several
#
# Install the chart first, under any release name: the functions read its ConfigMaps
# <fullname>-config/-env, the Secret <fullname>-redis and run as its service accounts, and get
# the pod extras of ConfigMap <fullname>-extras (the chart's extraEnvVars, extraEnvVarsCMs,
# extraEnvVarsSecrets, extraVolumes, extraVolumeMounts, initContainers, sidecars), where
# <fullname> is the chart's name for its objects ("outpost" for release "outpost"). The chart
# labels its -env ConfigMap with outpost.jupyterhub.org/fullname; this script reads that label
# (the one release in the namespace, or --release NAME) and names everything it deploys
# <fullname>-*: the Knative Services, sources, Broker and Triggers. Re-run after
# `helm upgrade` or a secret change: a fingerprint of those objects goes into each revision,
# so changed configuration rolls out new revisions. --dry-run reads the release too.
#
# Environment (all optional):
#   OUTPOST_IMAGE    image instead of --image
#   CRYPT_SECRET     Secret with key secret_key          (default: outpost-cryptkey)
#   USERS_SECRET     Secret with keys usernames/passwords (default: outpost-users)
#   PODS_NAMESPACE   namespace of the single-user pods when it is not --namespace
#   BROKER_CLASS     Broker class (default: MTChannelBasedBroker; Kafka in production)
#   CLUSTER_DOMAIN   cluster DNS suffix (default: cluster.local)
#   KN, KUBECTL      the binaries to use (default: kn, kubectl)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FUNCTIONS=(start poll stop events timer pod-status)
PLACEHOLDER_IMAGE="registry.example.org/outpost/functions:0.1.0"

NAMESPACE="outpost"
RELEASE=""
IMAGE="${OUTPOST_IMAGE:-}"
MODE="kn"
DRY_RUN=0
CRYPT_SECRET="${CRYPT_SECRET:-outpost-cryptkey}"
USERS_SECRET="${USERS_SECRET:-outpost-users}"
PODS_NAMESPACE="${PODS_NAMESPACE:-}"
BROKER_CLASS="${BROKER_CLASS:-MTChannelBasedBroker}"
CLUSTER_DOMAIN="${CLUSTER_DOMAIN:-cluster.local}"
KN="${KN:-kn}"
KUBECTL="${KUBECTL:-kubectl}"

# The comment block at the top of this file, up to its first command.
usage() {
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
}

die() {
  echo "deploy.sh: $*" >&2
  exit 1
}

# Print each command; run it unless --dry-run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "${DRY_RUN}" -eq 0 ]]; then
    "$@"
  fi
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -n | --namespace) NAMESPACE="${2:?--namespace needs a value}"; shift 2 ;;
    --release) RELEASE="${2:?--release needs a value}"; shift 2 ;;
    --image) IMAGE="${2:?--image needs a value}"; shift 2 ;;
    --manifests) MODE="kubectl"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ -n "${IMAGE}" ]] || die "--image (or OUTPOST_IMAGE) is required: the image built from containers/functions.Containerfile"
PODS_NAMESPACE="${PODS_NAMESPACE:-${NAMESPACE}}"
DNS_LABEL='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
[[ -z "${RELEASE}" || "${RELEASE}" =~ ${DNS_LABEL} ]] || die "--release ${RELEASE}: not a Helm release name"

command -v "${KUBECTL}" >/dev/null || die "${KUBECTL} not found"
if [[ "${DRY_RUN}" -eq 0 && "${MODE}" == "kn" ]]; then
  command -v "${KN}" >/dev/null || die "${KN} not found (or use --manifests)"
fi

# The chart's releases here, "<release> <fullname>" a line, from the label on each release's -env ConfigMap.
selector="outpost.jupyterhub.org/fullname"
[[ -z "${RELEASE}" ]] || selector+=",app.kubernetes.io/instance=${RELEASE}"
found="$(
  "${KUBECTL}" get configmap -n "${NAMESPACE}" -l "${selector}" -o \
    'jsonpath={range .items[*]}{.metadata.labels.app\.kubernetes\.io/instance} {.metadata.labels.outpost\.jupyterhub\.org/fullname}{"\n"}{end}'
)" || die "cannot list the ConfigMaps in ${NAMESPACE}"
case "$(printf '%s' "${found}" | grep -c .)" in
  0) die "no release${RELEASE:+ ${RELEASE}} of charts/jupyterhub-outpost in ${NAMESPACE} (no ConfigMap labelled outpost.jupyterhub.org/fullname): install or upgrade the Helm chart first" ;;
  1) read -r RELEASE FULLNAME <<<"${found}" ;;
  *) die "several releases of charts/jupyterhub-outpost in ${NAMESPACE} ($(printf '%s\n' "${found}" | cut -d' ' -f1 | paste -sd, -)): choose one with --release NAME" ;;
esac
[[ "${FULLNAME}" =~ ${DNS_LABEL} ]] || die "release ${RELEASE}: unexpected object name prefix '${FULLNAME}'"
echo "Release ${RELEASE} in ${NAMESPACE}: deploying ${FULLNAME}-*"
EVENTS_URL="http://${FULLNAME}-events.${NAMESPACE}.svc.${CLUSTER_DOMAIN}"

if [[ "${DRY_RUN}" -eq 0 ]]; then
  # resourceVersions change whenever the chart's configuration or a referenced secret changes.
  FINGERPRINT="$(
    "${KUBECTL}" get -n "${NAMESPACE}" --ignore-not-found \
      "configmap/${FULLNAME}-config" "configmap/${FULLNAME}-env" "configmap/${FULLNAME}-extras" \
      "secret/${FULLNAME}-redis" \
      "secret/${CRYPT_SECRET}" "secret/${USERS_SECRET}" \
      -o 'jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}' \
      | sha256sum | cut -c1-16
  )"
else
  FINGERPRINT="dry-run"
fi

# Render the manifests with this installation's names, image, secret names, fingerprint and class.
# The files name everything as release "outpost" does: outpost-<part> and the Broker "outpost".
# The names first, so a secret name that starts with outpost- is left alone.
PARTS="start|poll|stop|events|timer|pod-|tick|config|env|redis|metrics|functions"
RENDERED="$(mktemp -d)"
trap 'rm -rf "${RENDERED}"' EXIT
for file in "${HERE}"/outpost-*.yaml "${HERE}/eventing.yaml"; do
  sed -E \
    -e "s#(^|[^A-Za-z0-9.-])outpost-(${PARTS})#\1${FULLNAME}-\2#g" \
    -e "s#^([[:space:]]*(name|broker): )outpost\$#\1${FULLNAME}#" \
    -e "s#^([[:space:]]*app\.kubernetes\.io/instance: )outpost\$#\1${RELEASE}#" \
    -e "s#image: ${PLACEHOLDER_IMAGE}#image: ${IMAGE}#" \
    -e "s#name: outpost-cryptkey,#name: ${CRYPT_SECRET},#" \
    -e "s#name: outpost-users,#name: ${USERS_SECRET},#" \
    -e "s#config-fingerprint: \"unset\"#config-fingerprint: \"${FINGERPRINT}\"#" \
    -e "s#broker.class: MTChannelBasedBroker#broker.class: ${BROKER_CLASS}#" \
    "${file}" >"${RENDERED}/$(basename "${file}")"
done

# The chart's pod extras, one JSON object a line per list (a release older than the ConfigMap has none).
extras() {
  "${KUBECTL}" get configmap "${FULLNAME}-extras" -n "${NAMESPACE}" --ignore-not-found -o "jsonpath={.data.$1}" \
    || die "cannot read configmap ${FULLNAME}-extras in ${NAMESPACE}"
}
# Through the environment: awk -v would undo the backslash escapes inside the JSON.
EXTRA_ENV="$(extras env)" EXTRA_ENV_FROM="$(extras envFrom)" EXTRA_MOUNTS="$(extras volumeMounts)" \
  EXTRA_VOLUMES="$(extras volumes)" EXTRA_INIT="$(extras initContainers)" EXTRA_CONTAINERS="$(extras containers)"
export EXTRA_ENV EXTRA_ENV_FROM EXTRA_MOUNTS EXTRA_VOLUMES EXTRA_INIT EXTRA_CONTAINERS
# Each extra is appended (a JSON object is YAML) to its list in the function's pod spec, as the
# chart appends them on the daemon: a list ends at the next line indented no deeper than its key.
# The anchors are the lines of knative/outpost-*.yaml that open those lists.
for fn in "${FUNCTIONS[@]}"; do
  file="${RENDERED}/outpost-${fn}.yaml"
  awk '
    function items(name, indent,   n, lines, i) {
      n = split(ENVIRON[name], lines, "\n")
      for (i = 1; i <= n; i++) if (lines[i] != "") print indent "- " lines[i]
    }
    # inner: an open list of the container (key at 10 spaces); outer: of the pod spec (6 spaces).
    NF {
      match($0, /^ */)
      if (inner != "" && RLENGTH <= 10) { items(inner, "            "); inner = "" }
      if (outer != "" && RLENGTH <= 6) { items(outer, "        "); outer = "" }
    }
    /^      containers:$/ {
      if (ENVIRON["EXTRA_INIT"] != "") { print "      initContainers:"; items("EXTRA_INIT", "        ") }
      outer = "EXTRA_CONTAINERS"
    }
    /^      volumes:$/ { outer = "EXTRA_VOLUMES" }
    /^          env:$/ { inner = "EXTRA_ENV" }
    /^          envFrom:$/ { inner = "EXTRA_ENV_FROM" }
    /^          volumeMounts:$/ { inner = "EXTRA_MOUNTS" }
    { print }
    END {
      if (inner != "") items(inner, "            ")
      if (outer != "") items(outer, "        ")
    }
  ' "${file}" >"${file}.extras"
  mv "${file}.extras" "${file}"
done

# kn <kind...> NAME: "create" when absent, else "update" (kn's create fails on existing objects).
kn_verb() {
  if [[ "${DRY_RUN}" -eq 0 ]] && "${KN}" "$@" describe "${NAME}" -n "${NAMESPACE}" >/dev/null 2>&1; then
    echo update
  else
    echo create
  fi
}

watch_other_namespace() {
  if [[ "${PODS_NAMESPACE}" != "${NAMESPACE}" ]]; then
    run "${KUBECTL}" patch apiserversource "${FULLNAME}-pod-watch" -n "${NAMESPACE}" --type merge -p \
      "{\"spec\":{\"namespaceSelector\":{\"matchLabels\":{\"kubernetes.io/metadata.name\":\"${PODS_NAMESPACE}\"}}}}"
  fi
}

if [[ "${MODE}" == "kubectl" ]]; then
  for fn in "${FUNCTIONS[@]}"; do
    run "${KUBECTL}" apply -n "${NAMESPACE}" -f "${RENDERED}/outpost-${fn}.yaml"
  done
  run "${KUBECTL}" apply -n "${NAMESPACE}" -f "${RENDERED}/eventing.yaml"
  watch_other_namespace
  exit 0
fi

# 1. The six Knative Services, declaratively from their files.
for fn in "${FUNCTIONS[@]}"; do
  run "${KN}" service apply "${FULLNAME}-${fn}" -n "${NAMESPACE}" -f "${RENDERED}/outpost-${fn}.yaml"
done

# 2. What kn cannot create: the pod watcher's ServiceAccount, Role and RoleBinding.
run "${KUBECTL}" apply -n "${NAMESPACE}" -f "${RENDERED}/eventing.yaml" -l outpost.jupyterhub.org/apply=kubectl

# 3. Pod changes -> <fullname>-pod-status.
NAME="${FULLNAME}-pod-watch"
run "${KN}" source apiserver "$(kn_verb source apiserver)" "${NAME}" -n "${NAMESPACE}" \
  --resource "Pod:v1:app.kubernetes.io/managed-by=jupyterhub-outpost" \
  --mode Reference --service-account "${FULLNAME}-pod-watcher" --sink "ksvc:${FULLNAME}-pod-status"
watch_other_namespace

# 4. The one-minute tick -> <fullname>-timer.
NAME="${FULLNAME}-tick"
run "${KN}" source ping "$(kn_verb source ping)" "${NAME}" -n "${NAMESPACE}" \
  --schedule "* * * * *" --data '{"task": "tick"}' --sink "ksvc:${FULLNAME}-timer"

# 5. The Broker for async start/stop; its delivery settings apply to both Triggers.
NAME="${FULLNAME}"
verb="$(kn_verb broker)"
class=()
if [[ "${verb}" == "create" ]]; then
  class=(--class "${BROKER_CLASS}")
fi
run "${KN}" broker "${verb}" "${NAME}" -n "${NAMESPACE}" "${class[@]}" \
  --retry 5 --backoff-policy exponential --backoff-delay PT1S --timeout PT300S \
  --dl-sink "${EVENTS_URL}/dead-letter"

# 6. Triggers: start/stop requests -> <fullname>-events (/start, /stop).
for action in start stop; do
  NAME="${FULLNAME}-${action}-requested"
  run "${KN}" trigger "$(kn_verb trigger)" "${NAME}" -n "${NAMESPACE}" --broker "${FULLNAME}" \
    --filter "type=org.jupyterhub.outpost.${action}.requested" --sink "${EVENTS_URL}/${action}"
done

echo "Done. Check: ${KN} service list -n ${NAMESPACE}; ${KN} source list -n ${NAMESPACE}; ${KN} trigger list -n ${NAMESPACE}"
