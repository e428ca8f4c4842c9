package eventlog_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// advancingLog is a real log whose EndOffsets, once armed, lets a record be produced and
// consumed after it read the end and before it returns: what a busy consumer does between
// the Guard's reading of the end and its reading of the consumer's position.
type advancingLog struct {
	eventlog.Log
	calls atomic.Int64
	mu    sync.Mutex
	hook  func(ctx context.Context)
}

func (l *advancingLog) EndOffsets(ctx context.Context, topic string) ([]int64, error) {
	l.calls.Add(1)
	ends, err := l.Log.EndOffsets(ctx, topic)
	l.mu.Lock()
	hook := l.hook
	l.hook = nil
	l.mu.Unlock()
	if hook != nil {
		hook(ctx)
	}
	return ends, err
}

// TestGuardIgnoresConsumerAheadOfAnEarlierEnd: a consumer whose position passed the end
// the Guard read a moment before is not reading a wiped log. The Guard took it for one
// (restarting the consumer at the log's start and logging a wipe) when it read the
// consumer's position after the end.
func TestGuardIgnoresConsumerAheadOfAnEarlierEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := &advancingLog{Log: test.EmbeddedLog(t, 1)}
	db, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "offsets.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() //nolint:errcheck // test cleanup
	offsets, err := eventlog.NewOffsetStore(ctx, db, "race")
	if err != nil {
		t.Fatal(err)
	}
	if _, err = l.Produce(ctx, "t", eventlog.Message{Key: []byte("k"), Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	g := &eventlog.Guard{Log: l, Offsets: offsets, Topic: "t", Interval: 5 * time.Millisecond, Logger: logrus.NewEntry(logger)}
	var starts atomic.Int64
	advance := make(chan func(int64), 1)
	go func() {
		_ = g.Run(ctx, 0, func(ctx context.Context, st eventlog.Stored, advanced func(int64)) error { //nolint:errcheck // ends with ctx
			starts.Add(1)
			if st.Next == 0 {
				advanced(1) // the first record, applied
			}
			select {
			case advance <- advanced:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	advanced := <-advance
	l.mu.Lock()
	l.hook = func(ctx context.Context) {
		if _, err := l.Produce(ctx, "t", eventlog.Message{Key: []byte("k"), Value: []byte("2")}); err != nil {
			t.Error(err)
		}
		advanced(2)
	}
	l.mu.Unlock()
	// Let the Guard check the log well past the armed check.
	for l.calls.Load() < 20 {
		time.Sleep(5 * time.Millisecond)
	}
	if n := starts.Load(); n != 1 {
		t.Fatalf("the consumer was started %d times; the Guard took a consumer ahead of the end it had read for a wiped log", n)
	}
}
