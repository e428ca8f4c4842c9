package api

import (
	"cmp"
	"context"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// DefaultPublicRoomsLimit and MaxPublicRoomsLimit bound a page of the published directory.
const (
	DefaultPublicRoomsLimit = 100
	MaxPublicRoomsLimit     = 500
)

// PublicRoomsRequest is a page of the published room directory, as /publicRooms (client
// and federation) asks for it.
type PublicRoomsRequest struct {
	Limit int
	// Since is a next_batch or prev_batch token of an earlier page ("" for the first).
	Since string
	// Filter is the generic_search_term: a case-insensitive substring of the name, topic
	// or canonical alias.
	Filter string
	// Network is the third_party_instance_id: an application service network's directory
	// instead of the main one; AllNetworks (include_all_networks) lists the main one and
	// every network's.
	Network     string
	AllNetworks bool
}

// ParsePublicRoomsQuery reads GET /publicRooms's since, limit, third_party_instance_id and
// include_all_networks (client and federation);
// a limit that is not an integer is 400 M_INVALID_PARAM, one too large for an int is
// MaxPublicRoomsLimit (ListPublicRooms clamps every limit to it) and one below 1 the default.
func ParsePublicRoomsQuery(q url.Values) (PublicRoomsRequest, error) {
	req := PublicRoomsRequest{Since: q.Get("since"), Network: q.Get("third_party_instance_id"), AllNetworks: q.Get("include_all_networks") == "true"}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if errors.Is(err, strconv.ErrRange) {
			n, err = MaxPublicRoomsLimit, nil
			if strings.HasPrefix(l, "-") {
				n = 0
			}
		}
		if err != nil {
			return PublicRoomsRequest{}, matrixerr.InvalidParam("limit must be an integer")
		}
		req.Limit = n
	}
	return req, nil
}

// PublicRoomsBody is the body of POST /publicRooms (client and federation).
type PublicRoomsBody struct {
	Limit  int    `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string `json:"generic_search_term"`
	} `json:"filter"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
}

// Request is the page the body asks for.
func (b PublicRoomsBody) Request() PublicRoomsRequest {
	return PublicRoomsRequest{Limit: b.Limit, Since: b.Since, Filter: b.Filter.GenericSearchTerm,
		Network: b.ThirdPartyInstanceID, AllNetworks: b.IncludeAllNetworks}
}

// PublicRoomsResponse is the spec's answer to /publicRooms.
type PublicRoomsResponse struct {
	Chunk                  []RoomSummary `json:"chunk"`
	NextBatch              string        `json:"next_batch,omitempty"`
	PrevBatch              string        `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int           `json:"total_room_count_estimate"`
}

// publicRoomsTokenPrefix starts every /publicRooms token: the first page's prev_batch would
// otherwise be "0", which clients in languages where "0" is false (sytest's Perl) take for
// no token at all.
const publicRoomsTokenPrefix = "o"

// ListPublicRooms answers /publicRooms from the published directory: rooms with the most
// joined members first, then by room ID (a stable order, so offsets page consistently while
// the directory is unchanged). Tokens are offsets into that order behind
// publicRoomsTokenPrefix (a bare offset, the earlier form, is accepted too); a bad token is
// 400 M_INVALID_PARAM. Every published room's summary is read on each call: fine for
// directories of hundreds of rooms, not for a public server with tens of thousands.
func ListPublicRooms(ctx context.Context, d DirectoryAPI, req PublicRoomsRequest) (*PublicRoomsResponse, error) {
	limit := req.Limit
	if limit <= 0 {
		limit = DefaultPublicRoomsLimit
	}
	limit = min(limit, MaxPublicRoomsLimit)
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, publicRoomsTokenPrefix))
		if err != nil || n < 0 {
			return nil, matrixerr.InvalidParam("since is not a token of this server")
		}
		offset = n
	}
	published, err := d.QueryPublishedRooms(ctx, &QueryPublishedRoomsRequest{Network: req.Network, AllNetworks: req.AllNetworks})
	if err != nil {
		return nil, err
	}
	rooms := []RoomSummary{}
	if len(published.RoomIDs) > 0 {
		sum, err := d.QueryRoomSummaries(ctx, &QueryRoomSummariesRequest{RoomIDs: published.RoomIDs})
		if err != nil {
			return nil, err
		}
		rooms = sum.Rooms
	}
	if term := strings.ToLower(strings.TrimSpace(req.Filter)); term != "" {
		rooms = slices.DeleteFunc(rooms, func(r RoomSummary) bool {
			return !strings.Contains(strings.ToLower(r.Name), term) && !strings.Contains(strings.ToLower(r.Topic), term) &&
				!strings.Contains(strings.ToLower(r.CanonicalAlias), term)
		})
	}
	slices.SortFunc(rooms, func(a, b RoomSummary) int {
		return cmp.Or(cmp.Compare(b.NumJoinedMembers, a.NumJoinedMembers), strings.Compare(a.RoomID, b.RoomID))
	})
	res := &PublicRoomsResponse{TotalRoomCountEstimate: len(rooms), Chunk: []RoomSummary{}}
	if offset < len(rooms) {
		end := min(offset+limit, len(rooms))
		res.Chunk = rooms[offset:end]
		if end < len(rooms) {
			res.NextBatch = publicRoomsTokenPrefix + strconv.Itoa(end)
		}
	}
	if offset > 0 {
		res.PrevBatch = publicRoomsTokenPrefix + strconv.Itoa(max(offset-limit, 0))
	}
	return res, nil
}
