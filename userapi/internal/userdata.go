package internal

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// PerformAccountData stores account data, then announces it on the OutputClientData
// topic keyed by user ID. Storing first means a crash in between loses only the
// announcement, which a retry of this idempotent call repeats; consumers upsert, so a
// repeated announcement changes nothing.
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
	if err = u.DB.PutAccountData(ctx, local, &storage.AccountData{RoomID: req.RoomID, Type: req.DataType, Content: req.Data}); err != nil {
		return nil, err
	}
	if u.Log != nil {
		msg, err := json.Marshal(api.OutputClientData{Type: api.OutputClientDataTypeAccountData, AccountData: &api.AccountDataChange{
			UserID: req.UserID, RoomID: req.RoomID, Type: req.DataType, Content: req.Data,
		}})
		if err != nil {
			return nil, err
		}
		if _, err = u.Log.Produce(ctx, u.ClientDataTopic, eventlog.Message{Key: []byte(req.UserID), Value: msg}); err != nil {
			return nil, fmt.Errorf("produce account data change: %w", err)
		}
	}
	return &api.PerformAccountDataResponse{}, nil
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
