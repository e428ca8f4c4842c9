package setup

import (
	"context"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/roomserver"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	rsinthttp "github.com/matrix-org/dendrite/roomserver/inthttp"
	"github.com/matrix-org/dendrite/searchapi"
)

// Reindex rebuilds the search index from the roomserver's stored timelines (the reindex
// command). A polylith (global.log.kind: kafka) reads them from the running roomserver
// shards' internal API; a monolith from the roomserver database. The search reader must be
// stopped: the searchapi process, or the whole monolith.
func Reindex(ctx context.Context, cfg *config.Dendrite, logger *logrus.Logger) (searchapi.ReindexStats, error) {
	var rooms rsapi.TimelineAPI
	if cfg.Global.Log.Kind == "kafka" {
		var urls []string
		for i := range cfg.RoomServer.Shards {
			urls = append(urls, cfg.RoomServer.ShardURL(i))
		}
		sc, err := rsinthttp.NewShardedClient(urls, cfg.Global.Log.Partitions, ihttp.ClientOptions{})
		if err != nil {
			return searchapi.ReindexStats{}, err
		}
		rooms = sc
	} else {
		rdb, err := sqlutil.Open(cfg.DatabaseFor("roomserver", cfg.RoomServer.Database))
		if err != nil {
			return searchapi.ReindexStats{}, fmt.Errorf("open roomserver database: %w", err)
		}
		defer rdb.Close() // nolint: errcheck // only read from
		if rooms, err = roomserver.NewTimeline(ctx, rdb); err != nil {
			return searchapi.ReindexStats{}, err
		}
	}
	db, err := sqlutil.Open(cfg.DatabaseFor("searchapi", cfg.SearchAPI.Database))
	if err != nil {
		return searchapi.ReindexStats{}, fmt.Errorf("open searchapi database: %w", err)
	}
	defer db.Close() // nolint: errcheck // every write is committed before Close
	return searchapi.Reindex(ctx, searchapi.ReindexDeps{Cfg: &cfg.SearchAPI, DB: db, Rooms: rooms, Logger: logger.WithField("component", "searchapi")})
}
