package internal

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
)

// QueryRoomAlias implements api.DirectoryAPI.
func (q *Querier) QueryRoomAlias(ctx context.Context, req *api.QueryRoomAliasRequest) (*api.QueryRoomAliasResponse, error) {
	a, err := q.in.db.Alias(ctx, req.Alias)
	if errors.Is(err, storage.ErrNotFound) {
		return &api.QueryRoomAliasResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	return &api.QueryRoomAliasResponse{RoomID: a.RoomID, Creator: a.Creator}, nil
}

// QueryAliasesForRoom implements api.DirectoryAPI.
func (q *Querier) QueryAliasesForRoom(ctx context.Context, req *api.QueryAliasesForRoomRequest) (*api.QueryAliasesForRoomResponse, error) {
	aliases, err := q.in.db.AliasesForRoom(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	return &api.QueryAliasesForRoomResponse{Aliases: aliases}, nil
}

// PerformSetRoomAlias implements api.DirectoryAPI.
func (q *Querier) PerformSetRoomAlias(ctx context.Context, req *api.PerformSetRoomAliasRequest) (*api.PerformSetRoomAliasResponse, error) {
	existing, err := q.in.db.InsertAlias(ctx, storage.Alias{Alias: req.Alias, RoomID: req.RoomID, Creator: req.Creator})
	if err != nil {
		return nil, err
	}
	if existing != nil {
		return &api.PerformSetRoomAliasResponse{RoomID: existing.RoomID, Creator: existing.Creator}, nil
	}
	return &api.PerformSetRoomAliasResponse{Created: true, RoomID: req.RoomID, Creator: req.Creator}, nil
}

// PerformRemoveRoomAlias implements api.DirectoryAPI.
func (q *Querier) PerformRemoveRoomAlias(ctx context.Context, req *api.PerformRemoveRoomAliasRequest) (*api.PerformRemoveRoomAliasResponse, error) {
	removed, err := q.in.db.DeleteAlias(ctx, req.Alias)
	if err != nil {
		return nil, err
	}
	return &api.PerformRemoveRoomAliasResponse{Removed: removed}, nil
}

// QueryRoomVisibility implements api.DirectoryAPI.
func (q *Querier) QueryRoomVisibility(ctx context.Context, req *api.QueryRoomVisibilityRequest) (*api.QueryRoomVisibilityResponse, error) {
	public, err := q.in.db.Published(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	return &api.QueryRoomVisibilityResponse{Public: public}, nil
}

// PerformSetRoomVisibility implements api.DirectoryAPI.
func (q *Querier) PerformSetRoomVisibility(ctx context.Context, req *api.PerformSetRoomVisibilityRequest) (*api.PerformSetRoomVisibilityResponse, error) {
	var err error
	if req.Network != "" {
		err = q.in.db.SetNetworkPublished(ctx, req.Network, req.RoomID, req.Public)
	} else {
		err = q.in.db.SetPublished(ctx, req.RoomID, req.Public)
	}
	if err != nil {
		return nil, err
	}
	return &api.PerformSetRoomVisibilityResponse{}, nil
}

// QueryPublishedRooms implements api.DirectoryAPI.
func (q *Querier) QueryPublishedRooms(ctx context.Context, req *api.QueryPublishedRoomsRequest) (*api.QueryPublishedRoomsResponse, error) {
	if req.Network != "" {
		ids, err := q.in.db.NetworkRooms(ctx, req.Network)
		if err != nil {
			return nil, err
		}
		return &api.QueryPublishedRoomsResponse{RoomIDs: ids}, nil
	}
	ids, err := q.in.db.PublishedRooms(ctx)
	if err != nil {
		return nil, err
	}
	if req.AllNetworks {
		more, err := q.in.db.NetworkRooms(ctx, "")
		if err != nil {
			return nil, err
		}
		ids = append(ids, more...)
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	return &api.QueryPublishedRoomsResponse{RoomIDs: ids}, nil
}

// summaryTuples is the state a directory entry is made of.
var summaryTuples = []api.StateKeyTuple{
	{EventType: spec.MRoomName}, {EventType: spec.MRoomTopic}, {EventType: "m.room.canonical_alias"},
	{EventType: "m.room.avatar"}, {EventType: spec.MRoomJoinRules}, {EventType: spec.MRoomHistoryVisibility},
	{EventType: "m.room.guest_access"}, {EventType: spec.MRoomCreate},
}

// QueryRoomSummaries implements api.DirectoryAPI from each room's current state and its
// joined members.
func (q *Querier) QueryRoomSummaries(ctx context.Context, req *api.QueryRoomSummariesRequest) (*api.QueryRoomSummariesResponse, error) {
	res := &api.QueryRoomSummariesResponse{Rooms: []api.RoomSummary{}}
	for _, roomID := range req.RoomIDs {
		h, err := q.in.cache.head(ctx, roomID)
		if err != nil {
			return nil, err
		}
		if h == nil || len(h.latestIDs) == 0 {
			continue
		}
		evs, err := q.stateEvents(ctx, h.room.RoomVersion, h.state, summaryTuples)
		if err != nil {
			return nil, err
		}
		s := summarise(roomID, evs)
		if s.NumJoinedMembers, err = q.in.db.JoinedCount(ctx, h.room.NID); err != nil {
			return nil, err
		}
		res.Rooms = append(res.Rooms, s)
	}
	return res, nil
}

// summaryContent holds the content fields of every event a directory entry reads.
type summaryContent struct {
	Name              string `json:"name"`
	Topic             string `json:"topic"`
	Alias             string `json:"alias"`
	URL               string `json:"url"`
	JoinRule          string `json:"join_rule"`
	HistoryVisibility string `json:"history_visibility"`
	GuestAccess       string `json:"guest_access"`
	Type              string `json:"type"`
}

// summarise reads a directory entry from the room's state events. Content that does not
// parse leaves its field empty.
func summarise(roomID string, evs []api.Event) api.RoomSummary {
	s := api.RoomSummary{RoomID: roomID}
	for _, e := range evs {
		var c summaryContent
		if json.Unmarshal(e.Content(), &c) != nil {
			continue
		}
		switch e.Type() {
		case spec.MRoomName:
			s.Name = c.Name
		case spec.MRoomTopic:
			s.Topic = c.Topic
		case "m.room.canonical_alias":
			s.CanonicalAlias = c.Alias
		case "m.room.avatar":
			s.AvatarURL = c.URL
		case spec.MRoomJoinRules:
			s.JoinRule = c.JoinRule
		case spec.MRoomHistoryVisibility:
			s.WorldReadable = c.HistoryVisibility == string(gomatrixserverlib.HistoryVisibilityWorldReadable)
		case "m.room.guest_access":
			s.GuestCanJoin = c.GuestAccess == "can_join"
		case spec.MRoomCreate:
			s.RoomType = c.Type
		}
	}
	return s
}
