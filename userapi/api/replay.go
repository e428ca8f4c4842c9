package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// QueryOutputRecordsRequest asks for the records of one of the userapi's output topics
// (Topic is TopicOutputClientData or TopicOutputKeyChangeEvent, without the configured
// prefix) in one partition whose number is above AfterSeq, at most Limit of them (default
// and cap 500).
type QueryOutputRecordsRequest struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	AfterSeq  int64  `json:"after_seq"`
	Limit     int    `json:"limit,omitempty"`
}

// QueryOutputRecordsResponse holds the records, in number order, exactly as they were
// produced (each with its Seq), and the partition's last number: a reader has them all
// once it applied LastSeq.
type QueryOutputRecordsResponse struct {
	Records []json.RawMessage `json:"records"`
	LastSeq int64             `json:"last_seq"`
}

// ReplayAPI is how readers of the userapi's output topics recover what a wiped or
// truncated log lost: the userapi's outbox is the truth, the log a copy of it. Records
// older than user_api.output_replay_window are gone: asking for them is 404 M_NOT_FOUND.
type ReplayAPI interface {
	QueryOutputRecords(ctx context.Context, req *QueryOutputRecordsRequest) (*QueryOutputRecordsResponse, error)
}

// OutputSequence is how a reader applies topic (TopicOutputClientData or
// TopicOutputKeyChangeEvent, without prefix) by the records' Seq and fetches what its log
// lost from r (see eventlog.Sequenced and eventlog.Guard).
func OutputSequence(r ReplayAPI, topic string) *eventlog.Sequenced {
	return eventlog.OwnerSequenced(func(ctx context.Context, partition int32, after int64, limit int) ([]json.RawMessage, int64, error) {
		res, err := r.QueryOutputRecords(ctx, &QueryOutputRecordsRequest{Topic: topic, Partition: partition, AfterSeq: after, Limit: limit})
		if err != nil {
			return nil, 0, err
		}
		return res.Records, res.LastSeq, nil
	}, func(err error) bool {
		var merr *matrixerr.Error
		return errors.As(err, &merr) && merr.Status == http.StatusNotFound
	})
}
