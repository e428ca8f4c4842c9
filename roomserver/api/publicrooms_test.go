package api

import (
	"context"
	"fmt"
	"net/url"
	"testing"
)

// fakeDirectory publishes n rooms; room i has i joined members.
type fakeDirectory struct {
	DirectoryAPI
	n int
}

func (f fakeDirectory) QueryPublishedRooms(context.Context, *QueryPublishedRoomsRequest) (*QueryPublishedRoomsResponse, error) {
	res := &QueryPublishedRoomsResponse{}
	for i := range f.n {
		res.RoomIDs = append(res.RoomIDs, fmt.Sprintf("!r%03d:x", i))
	}
	return res, nil
}

func (f fakeDirectory) QueryRoomSummaries(_ context.Context, req *QueryRoomSummariesRequest) (*QueryRoomSummariesResponse, error) {
	res := &QueryRoomSummariesResponse{}
	for i, id := range req.RoomIDs {
		res.Rooms = append(res.Rooms, RoomSummary{RoomID: id, Name: fmt.Sprintf("room %d", i), NumJoinedMembers: i})
	}
	return res, nil
}

func TestListPublicRoomsPaging(t *testing.T) {
	ctx := context.Background()
	d := fakeDirectory{n: 650}
	first, err := ListPublicRooms(ctx, d, PublicRoomsRequest{})
	if err != nil || len(first.Chunk) != DefaultPublicRoomsLimit || first.NextBatch != "o100" || first.PrevBatch != "" || first.TotalRoomCountEstimate != 650 {
		t.Fatalf("first page: %d rooms, next %q prev %q total %d, %v", len(first.Chunk), first.NextBatch, first.PrevBatch, first.TotalRoomCountEstimate, err)
	}
	if first.Chunk[0].NumJoinedMembers != 649 {
		t.Fatalf("the biggest room is not first: %+v", first.Chunk[0])
	}
	big, err := ListPublicRooms(ctx, d, PublicRoomsRequest{Limit: 10000, Since: "100"})
	// The first page's prev_batch is never "0", which clients may take for no token.
	if err != nil || len(big.Chunk) != MaxPublicRoomsLimit || big.NextBatch != "o600" || big.PrevBatch != "o0" {
		t.Fatalf("clamped page: %d rooms, next %q prev %q, %v", len(big.Chunk), big.NextBatch, big.PrevBatch, err)
	}
	last, err := ListPublicRooms(ctx, d, PublicRoomsRequest{Limit: 100, Since: big.NextBatch})
	if err != nil || len(last.Chunk) != 50 || last.NextBatch != "" || last.PrevBatch != "o500" {
		t.Fatalf("last page: %d rooms, next %q prev %q, %v", len(last.Chunk), last.NextBatch, last.PrevBatch, err)
	}
	past, err := ListPublicRooms(ctx, d, PublicRoomsRequest{Since: "9999"})
	if err != nil || len(past.Chunk) != 0 || past.Chunk == nil || past.NextBatch != "" {
		t.Fatalf("past the end: %+v %v", past, err)
	}
	filtered, err := ListPublicRooms(ctx, d, PublicRoomsRequest{Filter: " ROOM 64 "})
	if err != nil || filtered.TotalRoomCountEstimate != 11 { // 64 and 640-649
		t.Fatalf("filtered: %+v %v", filtered, err)
	}
	for _, bad := range []string{"x", "-1", "1.5", "o", "o-1"} {
		if _, err := ListPublicRooms(ctx, d, PublicRoomsRequest{Since: bad}); err == nil {
			t.Errorf("since %q accepted", bad)
		}
	}
}

func TestParsePublicRoomsQuery(t *testing.T) {
	for _, c := range []struct {
		limit string
		want  int // the page size ListPublicRooms serves; 0 when refused
	}{
		{"", DefaultPublicRoomsLimit}, {"0", DefaultPublicRoomsLimit}, {"-5", DefaultPublicRoomsLimit}, {"7", 7},
		{"501", MaxPublicRoomsLimit}, {"9223372036854775807", MaxPublicRoomsLimit}, {"99999999999999999999", MaxPublicRoomsLimit},
		{"-99999999999999999999", DefaultPublicRoomsLimit}, {"many", 0}, {"1.5", 0},
	} {
		req, err := ParsePublicRoomsQuery(url.Values{"limit": {c.limit}})
		if c.want == 0 {
			if err == nil {
				t.Errorf("limit %q accepted", c.limit)
			}
			continue
		}
		if err != nil {
			t.Errorf("limit %q: %v", c.limit, err)
			continue
		}
		res, err := ListPublicRooms(context.Background(), fakeDirectory{n: 650}, req)
		if err != nil || len(res.Chunk) != c.want {
			t.Errorf("limit %q: %d rooms, want %d (%v)", c.limit, len(res.Chunk), c.want, err)
		}
	}
}
