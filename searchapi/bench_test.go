package searchapi_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/searchapi/storage"
	searchsql "github.com/matrix-org/dendrite/searchapi/storage/sql"
)

// benchMessages is how many messages BenchmarkSearchIndex indexes (SEARCH_BENCH_MESSAGES
// overrides the default of 200,000), in 50 rooms.
func benchMessages() int {
	if n, err := strconv.Atoi(os.Getenv("SEARCH_BENCH_MESSAGES")); err == nil && n > 0 {
		return n
	}
	return 200_000
}

// vocabulary is 5,000 made-up words drawn with a Zipf distribution: word 0 is in about
// one message in six, the tail in a handful.
func vocabulary() []string {
	out := make([]string, 5000)
	for i := range out {
		out[i] = fmt.Sprintf("w%dx%c", i, 'a'+rune(i%26))
	}
	return out
}

// BenchmarkSearchIndex indexes benchMessages messages of 8 words in 50 rooms through the
// storage layer in batches of 100 (as the consumer applies them), then measures search
// latency (rank order, count included, as one /search page runs them) for a rare word, a
// common word and two words, for a user in all 50 rooms and in 5 (20 runs each: p99 is
// the slowest). It reports indexing
// events/s, the index's size on disk and p50/p99 per query kind. Run with
//
//	go test ./searchapi/ -run '^$' -bench BenchmarkSearchIndex -benchtime 1x
func BenchmarkSearchIndex(b *testing.B) {
	for _, engine := range []string{"sqlite", "postgres"} {
		b.Run(engine, func(b *testing.B) {
			for range b.N {
				benchEngine(b, engine)
			}
		})
	}
}

func benchEngine(b *testing.B, engine string) {
	ctx := context.Background()
	dir := b.TempDir()
	dsn := "file:" + filepath.Join(dir, "search.db")
	if engine == "postgres" {
		dsn = test.PostgresDSN(b)
	}
	db, err := sqlutil.Open(dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // benchmark cleanup
	d, err := searchsql.Open(ctx, db, searchsql.Options{TextSearchConfig: "simple", Tokenizer: "unicode61 remove_diacritics 2"})
	if err != nil {
		b.Fatal(err)
	}
	words := vocabulary()
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.1, 1, uint64(len(words)-1))
	rooms := make([]string, 50)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("!room%d:bench", i)
	}
	n := benchMessages()
	start := time.Now()
	for i := 0; i < n; i += 100 {
		batch := make([]storage.Event, 0, 100)
		for j := i; j < min(i+100, n); j++ {
			body := ""
			for range 8 {
				body += words[zipf.Uint64()] + " "
			}
			batch = append(batch, storage.Event{EventID: fmt.Sprintf("$e%d", j), RoomID: rooms[j%50], Sender: "@u:bench",
				Type: "m.room.message", OriginServerTS: int64(j), RoomPos: int64(j), Key: storage.KeyBody, Text: storage.IndexText(body)})
		}
		if err := db.WithTx(ctx, func(tx *sql.Tx) error { return d.StoreEvents(ctx, tx, batch) }); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "indexed/s")
	b.ReportMetric(float64(diskSize(b, db, dir))/(1<<20), "MiB")
	fmt.Fprintf(os.Stderr, "%s: indexed %d in %s (%.0f/s)\n", engine, n, elapsed, float64(n)/elapsed.Seconds())
	for _, kind := range []struct {
		name  string
		words []string
	}{{"rare", []string{words[4000]}}, {"common", []string{words[0]}}, {"two", []string{words[20], words[30]}}} {
		for _, scope := range []struct {
			name  string
			rooms []string
		}{{"50rooms", rooms}, {"5rooms", rooms[:5]}} {
			var times []time.Duration
			for range 20 {
				q := storage.Query{Words: kind.words, Rooms: scope.rooms, Order: storage.OrderRank, Limit: 20}
				t0 := time.Now()
				if _, err := d.Count(ctx, &q); err != nil {
					b.Fatal(err)
				}
				if _, err := d.Search(ctx, &q); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(t0))
			}
			slices.Sort(times)
			fmt.Fprintf(os.Stderr, "%s %s %s: p50 %s p99 %s\n", engine, kind.name, scope.name, times[len(times)/2], times[len(times)*99/100])
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, kind.name+"-"+scope.name+"-p50-ms")
			b.ReportMetric(float64(times[len(times)*99/100].Microseconds())/1000, kind.name+"-"+scope.name+"-p99-ms")
		}
	}
}

// diskSize is the index's size: the SQLite files, or PostgreSQL's tables with their indexes.
func diskSize(b *testing.B, db *sqlutil.DB, dir string) int64 {
	if db.Engine() == sqlutil.Postgres {
		var n int64
		err := db.QueryRow(`SELECT pg_total_relation_size('searchapi_events') + pg_total_relation_size('searchapi_text')`).Scan(&n)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		b.Fatal(err)
	}
	var total int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			total += info.Size()
		}
	}
	return total
}
