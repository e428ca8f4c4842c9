// Package api is the appservice component's contract: the questions other components ask
// application services through it. It owns no topic; it reads OutputRoomEvent and the EDU
// servers' outputs (see appservice.go) and sends them to the application services.
package api

import (
	"context"
	"encoding/json"
)

// QueryUserIDExistsRequest asks whether a user ID of this server that has no account is
// provided by an application service.
type QueryUserIDExistsRequest struct {
	UserID string `json:"user_id"`
}

// QueryUserIDExistsResponse says whether a service whose users namespace has the user
// answered GET /_matrix/app/v1/users/{userId} with success (it has created the user).
type QueryUserIDExistsResponse struct {
	Exists bool `json:"exists"`
}

// QueryRoomAliasExistsRequest asks whether a room alias of this server that names no room
// is provided by an application service.
type QueryRoomAliasExistsRequest struct {
	Alias string `json:"alias"`
}

// QueryRoomAliasExistsResponse says whether a service whose aliases namespace has the
// alias answered GET /_matrix/app/v1/rooms/{roomAlias} with success (it has created the
// room and the alias).
type QueryRoomAliasExistsResponse struct {
	Exists bool `json:"exists"`
}

// Third-party lookup kinds (the client API's /thirdparty/{kind}).
const (
	ThirdPartyProtocol = "protocol"
	ThirdPartyLocation = "location"
	ThirdPartyUser     = "user"
)

// QueryThirdPartyRequest is a third-party lookup: a protocol's metadata, or locations or
// users by protocol and fields (Protocol empty: by alias or user ID in Query).
type QueryThirdPartyRequest struct {
	Kind     string              `json:"kind"`
	Protocol string              `json:"protocol,omitempty"`
	Query    map[string][]string `json:"query,omitempty"`
}

// QueryThirdPartyResponse is the answer: for a protocol, the protocol object with the
// instances of every service providing it merged; for locations and users, the
// concatenated lists of the services asked. Found is false when no service provides the
// protocol (or none answered a protocol lookup).
type QueryThirdPartyResponse struct {
	Found  bool            `json:"found"`
	Result json.RawMessage `json:"result,omitempty"`
}

// QueryProtocolsRequest asks for every protocol the services provide.
type QueryProtocolsRequest struct{}

// QueryProtocolsResponse maps each protocol to its metadata (merged instances).
type QueryProtocolsResponse struct {
	Protocols map[string]json.RawMessage `json:"protocols"`
}

// PerformPingRequest asks the homeserver to ping a service (POST
// /_matrix/client/v1/appservice/{appserviceId}/ping).
type PerformPingRequest struct {
	ServiceID     string `json:"service_id"`
	TransactionID string `json:"transaction_id,omitempty"`
}

// PerformPingResponse is the round trip in milliseconds.
type PerformPingResponse struct {
	DurationMS int64 `json:"duration_ms"`
}

// QueryAPI is what the clientapi asks the appservice component.
type QueryAPI interface {
	QueryUserIDExists(ctx context.Context, req *QueryUserIDExistsRequest) (*QueryUserIDExistsResponse, error)
	QueryRoomAliasExists(ctx context.Context, req *QueryRoomAliasExistsRequest) (*QueryRoomAliasExistsResponse, error)
	QueryThirdParty(ctx context.Context, req *QueryThirdPartyRequest) (*QueryThirdPartyResponse, error)
	QueryProtocols(ctx context.Context, req *QueryProtocolsRequest) (*QueryProtocolsResponse, error)
	// PerformPing pings the service and reports the round trip; the service's failure is a
	// matrixerr error with the spec's codes (M_URL_NOT_SET, M_BAD_STATUS,
	// M_CONNECTION_FAILED, M_CONNECTION_TIMEOUT).
	PerformPing(ctx context.Context, req *PerformPingRequest) (*PerformPingResponse, error)
}
