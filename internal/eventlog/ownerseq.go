package eventlog

import (
	"context"
	"encoding/json"
)

// OwnerQuery asks an owner (the roomserver, the userapi) for partition's records numbered
// after after, at most limit of them (0: the owner's page), and the last number it has
// given in the partition.
type OwnerQuery func(ctx context.Context, partition int32, after int64, limit int) (records []json.RawMessage, lastSeq int64, err error)

// SeqOf reads the "seq" field every owner's numbered record carries.
func SeqOf(value []byte) (int64, error) {
	var o struct {
		Seq int64 `json:"seq"`
	}
	err := json.Unmarshal(value, &o)
	return o.Seq, err
}

// OwnerSequenced is the Sequenced of an owner's numbered records served by query. pastWindow
// reports whether query's error says the records asked for are older than the owner keeps:
// Fetch then answers ReplayGoneError with the oldest number kept (the first after 0, or the
// one after the last given when none is kept).
func OwnerSequenced(query OwnerQuery, pastWindow func(error) bool) *Sequenced {
	return &Sequenced{
		Seq: SeqOf,
		Fetch: func(ctx context.Context, partition int32, after int64) ([][]byte, error) {
			recs, _, err := query(ctx, partition, after, 0)
			if err != nil && pastWindow(err) {
				oldest, last, oerr := query(ctx, partition, 0, 1)
				if oerr != nil {
					return nil, oerr
				}
				gone := &ReplayGoneError{Oldest: last + 1}
				if len(oldest) > 0 {
					if gone.Oldest, oerr = SeqOf(oldest[0]); oerr != nil {
						return nil, oerr
					}
				}
				return nil, gone
			}
			if err != nil {
				return nil, err
			}
			out := make([][]byte, len(recs))
			for i, rec := range recs {
				out[i] = rec
			}
			return out, nil
		},
	}
}
