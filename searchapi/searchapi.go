// Package searchapi is the search reader (DESIGN.md 2, 13): it consumes OutputRoomEvent
// into a full-text index of message bodies, room names and topics (PostgreSQL full-text
// search or SQLite FTS5, in its own database) and serves POST /search, showing each user
// only the events history visibility lets them see. Encrypted messages are not searchable:
// the server cannot read them.
package searchapi

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/searchapi/consumer"
	"github.com/matrix-org/dendrite/searchapi/internal"
	"github.com/matrix-org/dendrite/searchapi/routing"
	"github.com/matrix-org/dendrite/searchapi/storage/sql"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// catchUpWait bounds how long a search waits for the index to reach the end of the log
// as it was when the request arrived; past it the search answers from what is indexed.
const catchUpWait = 5 * time.Second

// Deps is what the search reader is built from. OutputTopic is the full topic name.
type Deps struct {
	Cfg         *config.SearchAPI
	DB          *sqlutil.DB
	Log         eventlog.Log
	LogMetrics  *eventlog.Metrics
	OutputTopic string
	Rooms       rsapi.SearchRoomserverAPI
	// Replay, if set, gives back what a wiped log lost (rsapi.OutputSequence).
	Replay       rsapi.ReplayAPI
	DeviceLookup func(ctx context.Context, token string) (*uapi.Device, error)
	Logger       *logrus.Entry
	Registerer   prometheus.Registerer
}

// SearchAPI is a built search reader.
type SearchAPI struct {
	consumer *eventlog.Consumer
	handlers *routing.Handlers
}

// New opens the storage and the consumer. Run starts indexing.
func New(ctx context.Context, d Deps) (*SearchAPI, error) {
	db, err := sql.Open(ctx, d.DB, sql.Options{TextSearchConfig: d.Cfg.TextSearchConfig, Tokenizer: d.Cfg.Tokenizer})
	if err != nil {
		return nil, err
	}
	indexed := prometheus.NewCounter(prometheus.CounterOpts{Name: "dendrite_searchapi_indexed_events_total",
		Help: "Events whose text was added to the search index."})
	lag := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dendrite_searchapi_indexing_lag_seconds",
		Help: "Time between a new event's origin_server_ts and its indexing, for the last batch indexed."})
	queryTime := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dendrite_searchapi_query_seconds",
		Help: "Time to answer a search, by order.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"order"})
	if d.Registerer != nil {
		for _, c := range []prometheus.Collector{indexed, lag, queryTime} {
			if err := d.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	rooms := &consumer.RoomEvents{DB: db, Logger: d.Logger, Indexed: func(n int, newestTS int64) {
		indexed.Add(float64(n))
		if newestTS > 0 {
			lag.Set(max(time.Since(time.UnixMilli(newestTS)).Seconds(), 0))
		}
	}}
	c, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "searchapi", d.OutputTopic, rooms.Handle, d.Logger, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	if d.Replay != nil {
		c.Sequenced = rsapi.OutputSequence(d.Replay)
	}
	progress := eventlog.NewProgress(d.Log, d.OutputTopic)
	c.Progress = progress
	h := &routing.Handlers{
		Searcher: &internal.Searcher{DB: db, Rooms: d.Rooms}, DeviceLookup: d.DeviceLookup, QueryTime: queryTime,
		CatchUp: func(ctx context.Context) error { return progress.CatchUp(ctx, catchUpWait) },
	}
	return &SearchAPI{consumer: c, handlers: h}, nil
}

// Routes are the search reader's client routes.
func (s *SearchAPI) Routes() []httputil.Route {
	return s.handlers.Routes()
}

// Run indexes OutputRoomEvent until ctx ends.
func (s *SearchAPI) Run(ctx context.Context) error {
	return s.consumer.Run(ctx)
}

// ReindexDeps is what Reindex needs: the search database and configuration, and the
// roomserver's stored timelines (its internal API, or its database for a monolith).
type ReindexDeps struct {
	Cfg    *config.SearchAPI
	DB     *sqlutil.DB
	Rooms  rsapi.TimelineAPI
	Logger *logrus.Entry
}

// ReindexStats count the rooms and events a Reindex walked.
type ReindexStats = internal.ReindexStats

// Reindex rebuilds the search index from every room the roomserver stores (the reindex
// command); events already indexed are left as they are, so running it again is harmless.
// Run it while the search reader is stopped.
func Reindex(ctx context.Context, d ReindexDeps) (ReindexStats, error) {
	db, err := sql.Open(ctx, d.DB, sql.Options{TextSearchConfig: d.Cfg.TextSearchConfig, Tokenizer: d.Cfg.Tokenizer})
	if err != nil {
		return ReindexStats{}, err
	}
	r := &internal.Reindexer{DB: db, SQL: d.DB, Rooms: d.Rooms, Logger: d.Logger}
	return r.Reindex(ctx)
}
