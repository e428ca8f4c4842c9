// Package api is the push server's public shapes: the pushers clients register for push
// gateways. The push server is the reader that turns room events into notifications and
// pushes (DESIGN.md 2, 13); clients reach it through /pushers and /notifications.
package api

import "encoding/json"

// Pusher is one pusher as GET /pushers lists it and POST /pushers/set takes it.
type Pusher struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// PusherKindHTTP is the kind of pusher that posts to an HTTP push gateway.
const PusherKindHTTP = "http"

// NotifyPath is the path every HTTP pusher's URL must end with.
const NotifyPath = "/_matrix/push/v1/notify"
