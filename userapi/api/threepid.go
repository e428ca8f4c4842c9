package api

// ThreePID is a third-party identifier of a local account: the spec's ThirdPartyIdentifier
// plus the identity server it was bound on through this server ("" when none).
type ThreePID struct {
	Medium   string `json:"medium"`
	Address  string `json:"address"`
	IDServer string `json:"id_server,omitempty"`
	// AddedAt is when it was recorded, in milliseconds since the epoch.
	AddedAt int64 `json:"added_at"`
}

// PerformThreePIDRequest records (or, with Delete, forgets) a 3PID of a local user.
// Idempotent: recording replaces what was recorded for the medium and address, forgetting
// an unknown 3PID does nothing.
type PerformThreePIDRequest struct {
	UserID   string   `json:"user_id"`
	ThreePID ThreePID `json:"threepid"`
	Delete   bool     `json:"delete,omitempty"`
}

// PerformThreePIDResponse is empty.
type PerformThreePIDResponse struct{}

// QueryThreePIDsRequest asks for a local user's 3PIDs.
type QueryThreePIDsRequest struct {
	UserID string `json:"user_id"`
}

// QueryThreePIDsResponse lists them, ordered by medium and address.
type QueryThreePIDsResponse struct {
	ThreePIDs []ThreePID `json:"threepids"`
}
