// Package docker holds Dendrite's container image and deployment files (Dockerfile, the
// docker-compose polylith, the nginx front proxy and the Kubernetes manifests in k8s/).
// It has no Go code of its own: its tests check that those files agree with the process
// contract (`dendrite component --name ...`), the config and each other.
package docker
