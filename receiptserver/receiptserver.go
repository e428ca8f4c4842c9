// Package receiptserver is the server for read receipts. It reads InputReceipt, which
// writers produce, keeps each user's receipts moving only forward, and writes every move to
// OutputReceiptEvent, which the sync API (and the federation sender) read. See api/.
package receiptserver

import (
	"context"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/receiptserver/internal"
	"github.com/matrix-org/dendrite/receiptserver/storage/sql"
)

// Deps is what the receiptserver is built from. Topics are full names, with the prefix.
type Deps struct {
	DB          *sqlutil.DB
	Log         eventlog.Log
	LogMetrics  *eventlog.Metrics
	InputTopic  string
	OutputTopic string
	Logger      *logrus.Entry
}

// ReceiptServer is a running receiptserver.
type ReceiptServer struct {
	consumer *eventlog.Consumer
}

// New opens the storage. Run starts consuming.
func New(ctx context.Context, d Deps) (*ReceiptServer, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	h := &internal.Receipts{DB: db, Log: d.Log, OutputTopic: d.OutputTopic}
	c, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "receiptserver", d.InputTopic, h.Handle, d.Logger, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	return &ReceiptServer{consumer: c}, nil
}

// Run consumes the input topic until ctx ends.
func (s *ReceiptServer) Run(ctx context.Context) error {
	return s.consumer.Run(ctx)
}
