"""The Kubernetes backend: `manifests` (its options, `c.KubernetesBackend.*`, and the objects it creates),
`pods` (what a pod's status means), `backend` (the API calls; the only module that imports the client).

Importing the package does not import the Kubernetes client: the pod-status workflow reads pods through
`pods` in functions that may run another backend."""

from outpost.backends.kubernetes.manifests import KubernetesBackend

__all__ = ["KubernetesBackend"]
