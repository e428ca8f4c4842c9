package api

import "context"

// Room aliases and the published room directory (client-server spec "Room aliases" and
// "Published room directory"). The roomserver stores them because they are room metadata
// its shards already hold: an alias belongs to the shard ShardForKey(alias) picks, a room's
// visibility to the room's shard (roomserver/inthttp.ShardedClient routes both).

// QueryRoomAliasRequest asks which room a local alias points at.
type QueryRoomAliasRequest struct {
	Alias string `json:"alias"`
}

// QueryRoomAliasResponse is the alias's room; RoomID is empty when the alias is unknown.
type QueryRoomAliasResponse struct {
	RoomID string `json:"room_id,omitempty"`
	// Creator is the user who created the alias.
	Creator string `json:"creator,omitempty"`
}

// QueryAliasesForRoomRequest asks for the local aliases of a room.
type QueryAliasesForRoomRequest struct {
	RoomID string `json:"room_id"`
}

// QueryAliasesForRoomResponse lists them, sorted.
type QueryAliasesForRoomResponse struct {
	Aliases []string `json:"aliases"`
}

// PerformSetRoomAliasRequest creates an alias for a room.
type PerformSetRoomAliasRequest struct {
	Alias   string `json:"alias"`
	RoomID  string `json:"room_id"`
	Creator string `json:"creator"`
}

// PerformSetRoomAliasResponse says whether the alias was created. When it existed already,
// Created is false and RoomID names the room it points at (the same room when a retry of a
// request that succeeded).
type PerformSetRoomAliasResponse struct {
	Created bool   `json:"created"`
	RoomID  string `json:"room_id"`
	Creator string `json:"creator"`
}

// PerformRemoveRoomAliasRequest deletes an alias. The caller checks who may.
type PerformRemoveRoomAliasRequest struct {
	Alias string `json:"alias"`
}

// PerformRemoveRoomAliasResponse says whether the alias existed.
type PerformRemoveRoomAliasResponse struct {
	Removed bool `json:"removed"`
}

// QueryRoomVisibilityRequest asks whether a room is in the published room directory.
type QueryRoomVisibilityRequest struct {
	RoomID string `json:"room_id"`
}

// QueryRoomVisibilityResponse is the room's visibility.
type QueryRoomVisibilityResponse struct {
	Public bool `json:"public"`
}

// PerformSetRoomVisibilityRequest publishes a room in the directory or withdraws it.
type PerformSetRoomVisibilityRequest struct {
	RoomID string `json:"room_id"`
	Public bool   `json:"public"`
	// Network, when set, is the directory of an application service's third-party
	// network ("<appservice ID>|<network ID>", the third_party_instance_id of
	// /publicRooms) instead of the main one.
	Network string `json:"network,omitempty"`
}

// PerformSetRoomVisibilityResponse is empty.
type PerformSetRoomVisibilityResponse struct{}

// QueryPublishedRoomsRequest asks for every room of the published directory: the main one,
// or with Network an application service network's, or with AllNetworks the main one and
// every network's.
type QueryPublishedRoomsRequest struct {
	Network     string `json:"network,omitempty"`
	AllNetworks bool   `json:"all_networks,omitempty"`
}

// QueryPublishedRoomsResponse lists their IDs, sorted.
type QueryPublishedRoomsResponse struct {
	RoomIDs []string `json:"room_ids"`
}

// QueryRoomSummariesRequest asks for the directory entries of rooms.
type QueryRoomSummariesRequest struct {
	RoomIDs []string `json:"room_ids"`
}

// RoomSummary is a room as the published directory shows it (the spec's PublicRoomsChunk).
type RoomSummary struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// QueryRoomSummariesResponse holds the summaries of the rooms known here with a timeline,
// in the request's order; unknown rooms are left out.
type QueryRoomSummariesResponse struct {
	Rooms []RoomSummary `json:"rooms"`
}

// DirectoryAPI is the aliases and the published room directory, for clientapi (every
// method) and the federationapi (queries).
type DirectoryAPI interface {
	QueryRoomAlias(ctx context.Context, req *QueryRoomAliasRequest) (*QueryRoomAliasResponse, error)
	QueryAliasesForRoom(ctx context.Context, req *QueryAliasesForRoomRequest) (*QueryAliasesForRoomResponse, error)
	// PerformSetRoomAlias creates the alias unless it exists; it never moves an alias.
	PerformSetRoomAlias(ctx context.Context, req *PerformSetRoomAliasRequest) (*PerformSetRoomAliasResponse, error)
	PerformRemoveRoomAlias(ctx context.Context, req *PerformRemoveRoomAliasRequest) (*PerformRemoveRoomAliasResponse, error)
	QueryRoomVisibility(ctx context.Context, req *QueryRoomVisibilityRequest) (*QueryRoomVisibilityResponse, error)
	PerformSetRoomVisibility(ctx context.Context, req *PerformSetRoomVisibilityRequest) (*PerformSetRoomVisibilityResponse, error)
	QueryPublishedRooms(ctx context.Context, req *QueryPublishedRoomsRequest) (*QueryPublishedRoomsResponse, error)
	QueryRoomSummaries(ctx context.Context, req *QueryRoomSummariesRequest) (*QueryRoomSummariesResponse, error)
}
