// Package eduserver is the server for typing notifications and send-to-device messages. It
// reads InputTyping and InputSendToDevice, which writers produce, and writes
// OutputTypingEvent and OutputSendToDeviceEvent, which the sync API (and the federation
// sender) read. See api/ for the topics.
package eduserver

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/eduserver/internal"
	"github.com/matrix-org/dendrite/eduserver/storage/sql"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// Topics are the full names (with the configured prefix) of the eduserver's topics.
type Topics struct {
	InputTyping, OutputTyping, InputSendToDevice, OutputSendToDevice string
}

// TopicsWithPrefix names the eduserver's topics under prefix.
func TopicsWithPrefix(prefix string) Topics {
	return Topics{InputTyping: prefix + api.TopicInputTyping, OutputTyping: prefix + api.TopicOutputTypingEvent,
		InputSendToDevice: prefix + api.TopicInputSendToDevice, OutputSendToDevice: prefix + api.TopicOutputSendToDeviceEvent}
}

// Deps is what the eduserver is built from.
type Deps struct {
	Cfg        *config.EDUServer
	ServerName string
	DB         *sqlutil.DB
	Log        eventlog.Log
	LogMetrics *eventlog.Metrics
	Topics     Topics
	Devices    internal.DeviceLister
	Logger     *logrus.Entry
}

// EDUServer is a running eduserver.
type EDUServer struct {
	typing   *internal.Typing
	typingIn *eventlog.Consumer
	toDevice *eventlog.Consumer
	outbox   *internal.Outbox
	waiter   *internal.Waiter
	db       *sql.Database
	logger   *logrus.Entry
}

// New opens the storage. Run starts consuming.
func New(ctx context.Context, d Deps) (*EDUServer, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	waiter := internal.NewWaiter(db)
	td := &internal.ToDevice{DB: db, Waiter: waiter, Devices: d.Devices, ServerName: d.ServerName, OutputTopic: d.Topics.OutputSendToDevice, Log: d.Log}
	toDevice, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "eduserver", d.Topics.InputSendToDevice, nil, d.Logger, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	toDevice.Prepare = waiter.Prepare(td.Handle)
	outbox := internal.NewOutbox(db, d.Log, d.Topics.OutputSendToDevice, outputWindow(d.Cfg), d.Logger)
	toDevice.Applied = func(int32, int64) { outbox.Wake() }
	typing := internal.NewTyping(d.Log, d.Topics.OutputTyping, time.Duration(d.Cfg.MaxTypingTimeout), d.Logger)
	typingIn := &eventlog.Consumer{Log: d.Log, DB: d.DB, Offsets: toDevice.Offsets, Topic: d.Topics.InputTyping,
		Partitions: eventlog.AllPartitions(d.Log, d.Topics.InputTyping), Name: "eduserver", FromEnd: true,
		Prepare: typing.Prepare, Logger: d.Logger, Metrics: d.LogMetrics}
	return &EDUServer{
		outbox: outbox, waiter: waiter, typing: typing, typingIn: typingIn,
		toDevice: toDevice, db: db, logger: d.Logger,
	}, nil
}

// outputWindow is edu_server.output_replay_window, 7 days when unset.
func outputWindow(cfg *config.EDUServer) time.Duration {
	if cfg.OutputReplayWindow == 0 {
		return 7 * 24 * time.Hour
	}
	return time.Duration(cfg.OutputReplayWindow)
}

// serverAPI is api.ServerAPI from its two parts.
type serverAPI struct {
	*internal.Outbox
	*internal.Waiter
}

// API is what the eduserver serves: the replay readers of OutputSendToDeviceEvent recover
// what a wiped log lost from, and the wait writers acknowledge send-to-device requests
// after.
func (s *EDUServer) API() api.ServerAPI {
	return serverAPI{Outbox: s.outbox, Waiter: s.waiter}
}

// Run consumes both input topics, produces the stored to-device messages and prunes old
// transaction IDs until ctx ends.
func (s *EDUServer) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.typing.Run(ctx) })
	g.Go(func() error { return s.typingIn.Run(ctx) })
	g.Go(func() error { return s.toDevice.Run(ctx) })
	g.Go(func() error { return s.outbox.Run(ctx) })
	g.Go(func() error {
		tick := time.NewTicker(time.Hour)
		defer tick.Stop()
		for {
			if _, err := s.db.PruneTransactions(ctx, time.Now().Add(-internal.TxnRetention).UnixMilli()); err != nil && ctx.Err() == nil {
				s.logger.WithError(err).Warn("pruning send-to-device transactions failed")
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	})
	return g.Wait()
}
