package eventlog

import (
	"context"
	"encoding/json"
)

// QueryOutputRecordsRequest asks an owner for the output records of one partition numbered
// above AfterSeq, at most Limit of them (default and cap 500).
type QueryOutputRecordsRequest struct {
	Partition int32 `json:"partition"`
	AfterSeq  int64 `json:"after_seq"`
	Limit     int   `json:"limit,omitempty"`
}

// QueryOutputRecordsResponse holds the records, in number order, exactly as they were produced
// (each with its Seq), and the partition's last number.
type QueryOutputRecordsResponse struct {
	Records []json.RawMessage `json:"records"`
	LastSeq int64             `json:"last_seq"`
}

// ReplayAPI is how readers of an owner's output topic recover what a wiped or truncated
// log lost: the owner's outbox is the truth, the log a copy of it. Records older than the
// owner's output_replay_window are gone: asking for them is 404 M_NOT_FOUND.
type ReplayAPI interface {
	QueryOutputRecords(ctx context.Context, req *QueryOutputRecordsRequest) (*QueryOutputRecordsResponse, error)
}

// ReplaySequenced is how a reader applies an owner's output by the records' Seq and
// fetches what its log lost from r (see Sequenced and Guard).
func ReplaySequenced(r ReplayAPI) *Sequenced {
	return OwnerSequenced(func(ctx context.Context, partition int32, after int64, limit int) ([]json.RawMessage, int64, error) {
		res, err := r.QueryOutputRecords(ctx, &QueryOutputRecordsRequest{Partition: partition, AfterSeq: after, Limit: limit})
		if err != nil {
			return nil, 0, err
		}
		return res.Records, res.LastSeq, nil
	}, HTTPNotFound)
}
