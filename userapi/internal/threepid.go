package internal

import (
	"context"
	"time"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// PerformThreePID records or forgets a local user's 3PID.
func (u *UserAPI) PerformThreePID(ctx context.Context, req *api.PerformThreePIDRequest) (*api.PerformThreePIDResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	tp := req.ThreePID
	if tp.Medium == "" || tp.Address == "" {
		return nil, matrixerr.MissingParam("a 3PID needs a medium and an address")
	}
	if req.Delete {
		err = u.DB.DeleteThreePID(ctx, local, tp.Medium, tp.Address)
	} else {
		added := tp.AddedAt
		if added == 0 {
			added = time.Now().UnixMilli()
		}
		err = u.DB.PutThreePID(ctx, local, &storage.ThreePID{Medium: tp.Medium, Address: tp.Address, IDServer: tp.IDServer, AddedTS: added})
	}
	if err != nil {
		return nil, err
	}
	return &api.PerformThreePIDResponse{}, nil
}

// QueryThreePIDs lists a local user's 3PIDs.
func (u *UserAPI) QueryThreePIDs(ctx context.Context, req *api.QueryThreePIDsRequest) (*api.QueryThreePIDsResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	tps, err := u.DB.ThreePIDs(ctx, local)
	if err != nil {
		return nil, err
	}
	out := make([]api.ThreePID, 0, len(tps))
	for _, tp := range tps {
		out = append(out, api.ThreePID{Medium: tp.Medium, Address: tp.Address, IDServer: tp.IDServer, AddedAt: tp.AddedTS})
	}
	return &api.QueryThreePIDsResponse{ThreePIDs: out}, nil
}
