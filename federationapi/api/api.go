// Package api is the federationapi's contract with other components: the key ring that
// verifies other servers' signatures (their signing keys, fetched and cached by the
// federationapi), usable in any process through KeyRing, and the membership changes that
// need another server's help (joining a room this server is not in, inviting a user of
// another server, leaving a room through another server), which clientapi asks for.
package api

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// QueryPublicKeysRequest asks for servers' signing keys. The timestamp of each (server, key
// ID) is when the key must be valid; as in gomatrixserverlib.KeyFetcher.
type QueryPublicKeysRequest struct {
	Requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp `json:"requests"`
}

// QueryPublicKeysResponse holds the keys found. Keys that could not be found are missing;
// that is not an error.
type QueryPublicKeysResponse struct {
	Results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult `json:"results"`
}

// KeyAPI is what components that verify signatures (the roomserver, federationsender) use.
type KeyAPI interface {
	// QueryPublicKeys returns cached keys, first fetching those missing or past their
	// valid_until_ts from the servers themselves (then from the configured notaries) and
	// caching what it fetched. It has no other side effect.
	QueryPublicKeys(ctx context.Context, req *QueryPublicKeysRequest) (*QueryPublicKeysResponse, error)
}

// KeyRing is a gomatrixserverlib.JSONVerifier over a KeyAPI (direct or over internal HTTP):
// every key lookup goes to the federationapi, which fetches and caches.
func KeyRing(a KeyAPI) gomatrixserverlib.JSONVerifier {
	return NewKeyRing(a)
}

// NewKeyRing is KeyRing as the concrete type some gomatrixserverlib helpers take.
func NewKeyRing(a KeyAPI) *gomatrixserverlib.KeyRing {
	return &gomatrixserverlib.KeyRing{KeyDatabase: keyDatabase{a: a}}
}

// PerformJoinRequest asks to join a local user to a room this server is not in, through
// one of ServerNames (tried in order; the room ID's server is added last when missing).
type PerformJoinRequest struct {
	RoomID      string   `json:"room_id"`
	UserID      string   `json:"user_id"`
	ServerNames []string `json:"server_names"`
	// Content is the join's content besides membership (displayname, avatar_url, reason).
	Content json.RawMessage `json:"content,omitempty"`
}

// PerformJoinResponse names the join event, as the roomserver stored it.
type PerformJoinResponse struct {
	EventID string `json:"event_id"`
	// JoinedVia is the server that accepted the join.
	JoinedVia string `json:"joined_via"`
}

// PerformInviteRequest asks to invite a user of another server (UserID) into a room this
// server is in. Content is the invite's content besides membership (displayname, reason,
// is_direct).
type PerformInviteRequest struct {
	RoomID  string          `json:"room_id"`
	Sender  string          `json:"sender"`
	UserID  string          `json:"user_id"`
	Content json.RawMessage `json:"content,omitempty"`
}

// PerformInviteResponse names the invite event, as the roomserver stored it.
type PerformInviteResponse struct {
	EventID string `json:"event_id"`
}

// PerformLeaveRequest asks to leave (or reject an invite to) a room through another server
// with make_leave and send_leave: ServerNames first, then the servers of the user's invite
// and of the room ID.
type PerformLeaveRequest struct {
	RoomID      string          `json:"room_id"`
	UserID      string          `json:"user_id"`
	ServerNames []string        `json:"server_names,omitempty"`
	Content     json.RawMessage `json:"content,omitempty"`
}

// PerformLeaveResponse names the leave event.
type PerformLeaveResponse struct {
	EventID string `json:"event_id"`
}

// QueryRoomAliasRequest asks another server (the alias's) which room an alias names.
type QueryRoomAliasRequest struct {
	Alias string `json:"alias"`
}

// QueryRoomAliasResponse is that server's answer: the room and servers to join it through.
type QueryRoomAliasResponse struct {
	RoomID  string   `json:"room_id"`
	Servers []string `json:"servers"`
}

// QueryPublicRoomsRequest asks another server for a page of its published room directory.
type QueryPublicRoomsRequest struct {
	Server string `json:"server"`
	Limit  int    `json:"limit,omitempty"`
	Since  string `json:"since,omitempty"`
	Filter string `json:"filter,omitempty"`
}

// QueryPublicRoomsResponse is that server's page, as it answered.
type QueryPublicRoomsResponse struct {
	fclient.RespPublicRooms
}

// ClientFederationAPI is what clientapi uses for membership changes that involve another
// server, and to ask other servers about their aliases and published rooms. Failures are *matrixerr.Error values meant for the client: 404 M_NOT_FOUND when
// no server could be reached or knows the room, 403 M_FORBIDDEN when the room refused.
type ClientFederationAPI interface {
	// PerformJoin does make_join, signs the join, send_join (v2), checks the answer
	// (signatures, hashes, auth rules) and writes the room's state and auth chain to the
	// roomserver as outliers and the join as a federated event with that state. Joining
	// again is harmless.
	PerformJoin(ctx context.Context, req *PerformJoinRequest) (*PerformJoinResponse, error)
	// PerformInvite builds the invite on the room's current state, signs it, sends it to
	// the invitee's server (invite v2, with the room's stripped state), and writes the
	// invite signed by both servers to the roomserver.
	PerformInvite(ctx context.Context, req *PerformInviteRequest) (*PerformInviteResponse, error)
	// PerformLeave does make_leave, signs, send_leave (v2) and writes the leave to the
	// roomserver.
	PerformLeave(ctx context.Context, req *PerformLeaveRequest) (*PerformLeaveResponse, error)
	// QueryRoomAlias asks the alias's server (GET /query/directory); 404 M_NOT_FOUND when
	// it does not know the alias, 502 when it cannot be asked.
	QueryRoomAlias(ctx context.Context, req *QueryRoomAliasRequest) (*QueryRoomAliasResponse, error)
	// QueryPublicRooms asks a server for its published rooms (POST /publicRooms); 502 when
	// it cannot be asked.
	QueryPublicRooms(ctx context.Context, req *QueryPublicRoomsRequest) (*QueryPublicRoomsResponse, error)
	// ClaimRemoteKeys claims one-time keys of a server's users (POST /user/keys/claim),
	// keeping only keys of devices that were asked for; 502 when it cannot be asked.
	ClaimRemoteKeys(ctx context.Context, req *ClaimRemoteKeysRequest) (*ClaimRemoteKeysResponse, error)
}

// ClaimRemoteKeysRequest claims keys of Server's users: user ID -> device ID -> algorithm.
type ClaimRemoteKeysRequest struct {
	Server      string                       `json:"server"`
	OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
}

// ClaimRemoteKeysResponse is user ID -> device ID -> "algorithm:key_id" -> key.
type ClaimRemoteKeysResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// PerformBackfillRequest asks for history older than EventIDs (the room's earliest known
// events) from the other servers in the room: ServerNames in order, until one answers.
type PerformBackfillRequest struct {
	RoomID      string   `json:"room_id"`
	EventIDs    []string `json:"event_ids"`
	Limit       int      `json:"limit"`
	ServerNames []string `json:"server_names"`
}

// PerformBackfillResponse names the events the roomserver newly placed as backfilled, oldest
// first; readers get them as OutputTypeBackfilledEvent outputs. Empty when no server had
// anything older (or could be reached).
type PerformBackfillResponse struct {
	EventIDs []string `json:"event_ids"`
	// Server is the server that answered.
	Server string `json:"server,omitempty"`
}

// SyncFederationAPI is what the syncapi uses to page back past the start of the history
// this server has.
type SyncFederationAPI interface {
	// PerformBackfill fetches events with /backfill, checks their hashes and signatures,
	// fetches the state before any whose prev_events are unknown, and writes them to the
	// roomserver as one message of kind backfilled. Idempotent: events already placed are
	// not sent again.
	PerformBackfill(ctx context.Context, req *PerformBackfillRequest) (*PerformBackfillResponse, error)
}

// ServerAPI is everything the federationapi serves internally.
type ServerAPI interface {
	KeyAPI
	ClientFederationAPI
	SyncFederationAPI
}

// keyDatabase is the KeyRing's database: the federationapi's cache, which already stores
// what it fetched, so StoreKeys has nothing to do.
type keyDatabase struct {
	a KeyAPI
}

func (k keyDatabase) FetcherName() string {
	return "federationapi"
}

func (k keyDatabase) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	res, err := k.a.QueryPublicKeys(ctx, &QueryPublicKeysRequest{Requests: requests})
	if err != nil {
		return nil, err
	}
	return res.Results, nil
}

func (k keyDatabase) StoreKeys(context.Context, map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	return nil
}
