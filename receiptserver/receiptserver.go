// Package receiptserver is the server for read receipts. It reads InputReceipt, which
// writers produce, keeps each user's receipts moving only forward, and writes every move to
// OutputReceiptEvent, which the sync API (and the federation sender) read. See api/.
package receiptserver

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/receiptserver/api"
	"github.com/matrix-org/dendrite/receiptserver/internal"
	"github.com/matrix-org/dendrite/receiptserver/storage/sql"
)

// Deps is what the receiptserver is built from. Topics are full names, with the prefix.
type Deps struct {
	Cfg         *config.ReceiptServer
	DB          *sqlutil.DB
	Log         eventlog.Log
	LogMetrics  *eventlog.Metrics
	InputTopic  string
	OutputTopic string
	Logger      *logrus.Entry
}

// ReceiptServer is a running receiptserver.
type ReceiptServer struct {
	intake   *eventlog.Intake
	receipts *internal.Receipts
}

// New opens the storage. Run starts consuming.
func New(ctx context.Context, d Deps) (*ReceiptServer, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	outbox, err := eventlog.NewOutbox(ctx, d.DB, d.Log, eventlog.OutboxOptions{Component: "receiptserver", Topic: d.OutputTopic,
		Window: time.Duration(d.Cfg.OutputReplayWindow), Logger: d.Logger})
	if err != nil {
		return nil, err
	}
	taken, err := eventlog.NewTaken(ctx, d.DB, eventlog.TakenOptions{Component: "receiptserver",
		Keep: 2 * time.Duration(d.Cfg.InputWaitTimeout), Logger: d.Logger})
	if err != nil {
		return nil, err
	}
	h := &internal.Receipts{DB: db, Outbox: outbox, Taken: taken}
	intake, err := taken.Intake(ctx, d.Log, d.InputTopic, outbox, h.Handle, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	return &ReceiptServer{intake: intake, receipts: h}, nil
}

// API is how readers of OutputReceiptEvent recover what a wiped log lost, and how writers
// learn that a receipt was taken.
func (s *ReceiptServer) API() api.ServerAPI {
	return s.receipts
}

// Run consumes the input topic, produces the stored receipts and forgets expired taken
// inputs until ctx ends.
func (s *ReceiptServer) Run(ctx context.Context) error {
	return s.intake.Run(ctx)
}
