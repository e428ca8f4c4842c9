// Package roomserver is the component that owns rooms: it consumes InputRoomEvent, checks
// every event against the room's auth rules, keeps state as shared snapshots and writes
// OutputRoomEvent. See api/ for its contract.
package roomserver

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/internal"
	"github.com/matrix-org/dendrite/roomserver/storage/sql"
)

// Deps is what the roomserver is built from.
type Deps struct {
	Cfg         *config.RoomServer
	ServerName  spec.ServerName
	KeyID       gomatrixserverlib.KeyID
	PrivateKey  ed25519.PrivateKey
	DB          *sqlutil.DB
	Log         eventlog.Log
	InputTopic  string
	OutputTopic string
	// Shard is this process's index among Cfg.Shards; it owns the input partitions p with
	// p mod Shards == Shard.
	Shard      int
	Logger     *logrus.Entry
	Registerer prometheus.Registerer
	// LogMetrics, if set, counts the input records consumed, failed and dead-lettered.
	LogMetrics *eventlog.Metrics
	// CacheBudget is the process's cache budget in bytes (global.cache.max_bytes).
	CacheBudget caching.Budget
}

// RoomServer is a running roomserver shard.
type RoomServer struct {
	inputer *internal.Inputer
	querier *internal.Querier
}

// New opens the roomserver's storage. Run starts consuming.
func New(ctx context.Context, d Deps) (*RoomServer, error) {
	offsets, err := eventlog.NewOffsetStore(ctx, d.DB, "roomserver")
	if err != nil {
		return nil, fmt.Errorf("open roomserver offsets: %w", err)
	}
	db, err := sql.Open(ctx, d.DB, offsets)
	if err != nil {
		return nil, err
	}
	shards := max(d.Cfg.Shards, 1)
	var partitions []int32
	for p := int32(0); p < d.Log.Partitions(d.InputTopic); p++ {
		if int(p)%shards == d.Shard {
			partitions = append(partitions, p)
		}
	}
	in := internal.NewInputer(internal.Inputer{
		DB: db, SQL: d.DB, Log: d.Log, Offsets: offsets, LogMetrics: d.LogMetrics,
		InputTopic: d.InputTopic, OutputTopic: d.OutputTopic, Partitions: partitions,
		ServerName: d.ServerName, KeyID: d.KeyID, Key: d.PrivateKey,
		Logger: d.Logger, Metrics: internal.NewMetrics(d.Registerer), OutputWindow: outputWindow(d.Cfg),
		ResultWindow: 2 * time.Duration(d.Cfg.InputWaitTimeout),
		CacheBudget:  d.CacheBudget, Registerer: d.Registerer,
	})
	return &RoomServer{inputer: in, querier: internal.NewQuerier(in)}, nil
}

// NewTimeline serves api.TimelineAPI straight from a roomserver database (the reindex
// command of a monolith, whose roomserver runs in no other process).
func NewTimeline(ctx context.Context, db *sqlutil.DB) (api.TimelineAPI, error) {
	offsets, err := eventlog.NewOffsetStore(ctx, db, "roomserver")
	if err != nil {
		return nil, fmt.Errorf("open roomserver offsets: %w", err)
	}
	rdb, err := sql.Open(ctx, db, offsets)
	if err != nil {
		return nil, err
	}
	return &internal.Timeline{DB: rdb}, nil
}

// outputWindow is room_server.output_replay_window, 7 days when unset.
func outputWindow(cfg *config.RoomServer) time.Duration {
	if cfg.OutputReplayWindow == 0 {
		return 7 * 24 * time.Hour
	}
	return time.Duration(cfg.OutputReplayWindow)
}

// API is the query and wait API of this shard.
func (r *RoomServer) API() api.ServerAPI {
	return r.querier
}

// Run consumes the shard's input partitions until ctx ends.
func (r *RoomServer) Run(ctx context.Context) error {
	return r.inputer.Run(ctx)
}
