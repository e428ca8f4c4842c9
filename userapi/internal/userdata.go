package internal

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// PerformAccountData stores account data with its announcement on the OutputClientData
// topic (keyed by user ID) in one transaction, then produces the announcement. One that a
// crash or a failed produce left in the outbox is produced by RunOutbox; consumers skip
// repeated records by their number and upsert, so a repeat changes nothing.
func (u *UserAPI) PerformAccountData(ctx context.Context, req *api.PerformAccountDataRequest) (*api.PerformAccountDataResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	if req.DataType == "" {
		return nil, matrixerr.InvalidParam("the account data type must not be empty")
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(req.Data, &obj) != nil || obj == nil {
		return nil, matrixerr.BadJSON("account data must be a JSON object")
	}
	change := &api.AccountDataChange{UserID: req.UserID, RoomID: req.RoomID, Type: req.DataType, Content: req.Data}
	if _, err = u.DB.PutAccountData(ctx, local, &storage.AccountData{RoomID: req.RoomID, Type: req.DataType, Content: req.Data},
		u.accountDataOutput(change)); err != nil {
		return nil, err
	}
	u.Announce(ctx)
	return &api.PerformAccountDataResponse{}, nil
}

// accountDataOutput is the outbox record announcing change on OutputClientData; its
// Content may be filled in until the record is made (inside the storing transaction).
func (u *UserAPI) accountDataOutput(change *api.AccountDataChange) *storage.Output {
	return u.output(api.TopicOutputClientData, change.UserID, func(seq int64) ([]byte, error) {
		return json.Marshal(api.OutputClientData{Seq: seq, Type: api.OutputClientDataTypeAccountData, AccountData: change})
	})
}

// roomTagType is the room account data type that holds a room's tags.
const roomTagType = "m.tag"

// maxTagsBytes caps a room's m.tag content, as the client API caps other account data.
const maxTagsBytes = 65536

// PerformRoomTag adds or removes one tag in the room's m.tag account data, read, changed
// and written in one storage transaction so that concurrent tag changes keep each other,
// with the announcement of the whole new m.tag content like any account data change. Adding a tag
// again replaces its content; removing an absent tag changes nothing; both are idempotent.
func (u *UserAPI) PerformRoomTag(ctx context.Context, req *api.PerformRoomTagRequest) (*api.PerformRoomTagResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	if req.RoomID == "" || req.Tag == "" {
		return nil, matrixerr.InvalidParam("the room and the tag must not be empty")
	}
	if len(req.Content) > 0 {
		var obj map[string]json.RawMessage
		if json.Unmarshal(req.Content, &obj) != nil || obj == nil {
			return nil, matrixerr.BadJSON("a tag's content must be a JSON object")
		}
	}
	change := &api.AccountDataChange{UserID: req.UserID, RoomID: req.RoomID, Type: roomTagType}
	_, _, err = u.DB.UpdateAccountData(ctx, local, req.RoomID, roomTagType, func(old []byte) ([]byte, error) {
		var data struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		if len(old) > 0 && json.Unmarshal(old, &data) != nil {
			data.Tags = nil // stored by a client through the generic account data route in another shape
		}
		if data.Tags == nil {
			data.Tags = map[string]json.RawMessage{}
		}
		if len(req.Content) > 0 {
			data.Tags[req.Tag] = req.Content
		} else {
			delete(data.Tags, req.Tag)
		}
		out, err := json.Marshal(data)
		if err == nil && len(out) > maxTagsBytes {
			return nil, matrixerr.TooLarge("the room has too many tags")
		}
		change.Content = out
		return out, err
	}, u.accountDataOutput(change))
	if err != nil {
		return nil, err
	}
	u.Announce(ctx)
	return &api.PerformRoomTagResponse{}, nil
}

// QueryAccountData returns account data: RoomID "" means global and every room's, else
// that room's only; DataType "" means every type. Nothing found is an empty answer.
func (u *UserAPI) QueryAccountData(ctx context.Context, req *api.QueryAccountDataRequest) (*api.QueryAccountDataResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	rows, err := u.DB.AccountData(ctx, local, req.RoomID, req.DataType)
	if err != nil {
		return nil, err
	}
	res := &api.QueryAccountDataResponse{Global: map[string]json.RawMessage{}, Rooms: map[string]map[string]json.RawMessage{}}
	for _, r := range rows {
		if r.RoomID == "" {
			res.Global[r.Type] = r.Content
			continue
		}
		if res.Rooms[r.RoomID] == nil {
			res.Rooms[r.RoomID] = map[string]json.RawMessage{}
		}
		res.Rooms[r.RoomID][r.Type] = r.Content
	}
	return res, nil
}

// PerformPutFilter stores a filter and returns its ID (the same ID for the same filter).
func (u *UserAPI) PerformPutFilter(ctx context.Context, req *api.PerformPutFilterRequest) (*api.PerformPutFilterResponse, error) {
	if !json.Valid(req.Filter) {
		return nil, matrixerr.NotJSON("the filter is not valid JSON")
	}
	id, err := u.DB.PutFilter(ctx, req.Localpart, req.Filter)
	if err != nil {
		return nil, err
	}
	return &api.PerformPutFilterResponse{FilterID: id}, nil
}

// QueryFilter returns a stored filter, M_NOT_FOUND if the user has none with that ID.
func (u *UserAPI) QueryFilter(ctx context.Context, req *api.QueryFilterRequest) (*api.QueryFilterResponse, error) {
	f, err := u.DB.Filter(ctx, req.Localpart, req.FilterID)
	if err != nil {
		return nil, notFound(err, "no such filter")
	}
	return &api.QueryFilterResponse{Filter: f}, nil
}
