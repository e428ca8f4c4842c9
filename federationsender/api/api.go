// Package api is the federationsender's contract: what other components may tell it. It
// owns no topic; it reads OutputRoomEvent and the EDU servers' outputs (see
// federationsender.go) and sends them to other servers.
package api

import (
	"context"
)

// PerformServerAliveRequest says that ServerName was just seen to be up (it sent us a
// signed request).
type PerformServerAliveRequest struct {
	ServerName string `json:"server_name"`
}

// PerformServerAliveResponse is empty.
type PerformServerAliveResponse struct{}

// SenderAPI is what other components (the federationapi, for inbound requests) call.
type SenderAPI interface {
	// PerformServerAlive clears the server's backoff and blacklist so that its queue is
	// sent at once. It is cheap for a server that is not backing off, and idempotent.
	PerformServerAlive(ctx context.Context, req *PerformServerAliveRequest) (*PerformServerAliveResponse, error)
}
