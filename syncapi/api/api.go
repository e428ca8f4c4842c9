// Package api is the sync API's internal API: what other components ask of it directly.
// The sync API otherwise only reads topics; this contract is for the state it owns that
// another component's endpoint must change (peeks, which live in its storage).
package api

import "context"

// PeekAPI ends peeks (MSC2753) that the sync API keeps per device.
type PeekAPI interface {
	// PerformUnpeek ends the device's peek into the room, as POST /rooms/{roomId}/unpeek
	// does: from the device's next /sync on, the room is no longer in rooms.peek. Ending a
	// peek that is not there succeeds (with Ended false), so the call may be retried.
	PerformUnpeek(ctx context.Context, req *PerformUnpeekRequest) (*PerformUnpeekResponse, error)
}

// PerformUnpeekRequest names the device and the room whose peek ends.
type PerformUnpeekRequest struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
	RoomID   string `json:"room_id"`
}

// PerformUnpeekResponse says whether the call ended a peek; either way there is none
// once it returns.
type PerformUnpeekResponse struct {
	Ended bool `json:"ended"`
}
