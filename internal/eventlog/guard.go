package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// Guard runs a consumer of one partition and restarts it at the start of the log when the
// log it reads was wiped under it: the partition's incarnation (Log.Incarnation) is not the
// one stored with the consumer's offset, or the stored offset is past the partition's end.
// Before the restart, Recover brings the consumer's data up to date from the topic's owner
// (the owner's database is the truth, the log a copy of it); the new offset and incarnation
// are stored only once that succeeded. It is the one recovery path every consumer that
// stores its offsets in an OffsetStore can share.
type Guard struct {
	Log     Log
	Offsets *OffsetStore
	Topic   string
	// Recover, if set, makes the consumer's data complete from the owner (for example
	// Sequenced.CatchUp from the stored sequence number). It is retried with backoff until
	// it succeeds. A consumer without it (the roomserver's input: a record lost with the log
	// was never acknowledged) only restarts at the new log's start.
	Recover func(ctx context.Context, partition int32) error
	// Interval is how often a running consumer's log is checked (default 1s).
	Interval time.Duration
	Logger   *logrus.Entry
	Metrics  *Metrics

	// mu guards watched and checking: the partitions running under this Guard, which one
	// goroutine (check, while any runs) checks every Interval, rather than a goroutine per
	// partition (a monolith runs 29 consumers of 16 partitions each).
	mu       sync.Mutex
	watched  map[*watch]struct{}
	checking bool
}

// watch is a partition running under a Guard: what the check compares its log with, and
// how it stops the consumer once the log was wiped.
type watch struct {
	ctx       context.Context
	partition int32
	stored    string // the incarnation the offsets belong to; only check writes it after start
	next      *atomic.Int64
	cancel    context.CancelFunc
	wiped     atomic.Bool
}

// whileUnavailable runs f again, with backoff, while it fails because the database is
// unavailable (sqlutil.IsUnavailable: locked, unreachable, shutting down), as the consumer
// runtime retries a record in that case: a partition's (re)start waits for its database
// instead of stopping the consumer.
func (g *Guard) whileUnavailable(ctx context.Context, log *logrus.Entry, f func() error) error {
	b := newBackoffFrom(0)
	for {
		err := f()
		if err == nil || ctx.Err() != nil || !sqlutil.IsUnavailable(err) {
			return err
		}
		log.WithError(err).Warn("the consumer's position could not be read or stored: the database is unavailable; retrying")
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
}

// Run consumes partition with consume until ctx ends or consume fails. consume starts at
// st.Next and calls advanced with the next offset after each committed batch; it is
// cancelled and called again (after recovery, from the new log's start) when the log was
// wiped.
func (g *Guard) Run(ctx context.Context, partition int32, consume func(ctx context.Context, st Stored, advanced func(next int64)) error) error {
	log := g.Logger.WithFields(logrus.Fields{"topic": g.Topic, "partition": partition})
	for {
		var st Stored
		err := g.whileUnavailable(ctx, log, func() (err error) {
			st, err = g.Offsets.Position(ctx, g.Topic, partition)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("load position of %s/%d: %w", g.Topic, partition, err)
		}
		inc, end := g.state(ctx, partition)
		if wiped(st.Incarnation, st.Next, inc, end) {
			if err := g.recover(ctx, log, partition, st, inc, end); err != nil {
				return err
			}
			continue
		}
		if st.Incarnation == "" && inc != "" {
			err := g.whileUnavailable(ctx, log, func() error { return g.Offsets.Reset(ctx, g.Topic, partition, st.Next, inc) })
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("store incarnation of %s/%d: %w", g.Topic, partition, err)
			}
			st.Incarnation = inc
		}
		var next atomic.Int64
		next.Store(st.Next)
		run, cancel := context.WithCancel(ctx)
		w := &watch{ctx: run, partition: partition, stored: st.Incarnation, next: &next, cancel: cancel}
		g.start(w)
		err = consume(run, st, next.Store)
		g.stop(w)
		cancel()
		if !w.wiped.Load() {
			return err
		}
	}
}

// wiped reports whether a consumer at next in incarnation stored reads a wiped log: the
// log's incarnation cur differs, or next is past the end (end < 0: unknown; see truncated).
func wiped(stored string, next int64, cur string, end int64) bool {
	return (stored != "" && cur != "" && cur != stored) || (end >= 0 && next > end)
}

// truncated reports whether a consumer at next in incarnation stored reads a log that
// lost its newest records but is the same log: the incarnation is known and unchanged (a
// Kafka topic keeps its ID through an unclean leader election; an embedded log restored
// from an older copy keeps its partitions' IDs) and next is past the end. It is told apart
// from a wipe only in what is logged: the consumer cannot know at which offset the records
// new to it begin (those written since the truncation sit at offsets it already passed),
// so resuming anywhere but the log's start could skip them. It restarts there as after a
// wipe: a Sequenced reader skips by number what it has, other handlers are idempotent.
func truncated(stored string, next int64, cur string, end int64) bool {
	return stored != "" && cur == stored && end >= 0 && next > end
}

// state is the partition's incarnation and end; "" and -1 when the log cannot tell now.
func (g *Guard) state(ctx context.Context, partition int32) (string, int64) {
	inc, err := g.Log.Incarnation(ctx, g.Topic, partition)
	if err != nil {
		return "", -1
	}
	ends, err := g.Log.EndOffsets(ctx, g.Topic)
	if err != nil || int(partition) >= len(ends) {
		return inc, -1
	}
	return inc, ends[partition]
}

// start adds w to the partitions check looks at, and starts check if it was not running.
func (g *Guard) start(w *watch) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.watched == nil {
		g.watched = map[*watch]struct{}{}
	}
	g.watched[w] = struct{}{}
	if !g.checking {
		g.checking = true
		go g.check()
	}
}

// stop removes w from the partitions check looks at.
func (g *Guard) stop(w *watch) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.watched, w)
}

// check checks the log of every running partition every Interval, until none runs; a
// partition whose log was wiped is marked and its consumer cancelled (Run then recovers
// it). The checks fall on the same multiples of Interval in every Guard, and each tick
// checks its partitions at once, so that a process's partitions share their requests to
// the log (Kafka: one Metadata and one ListOffsets round trip serve every caller that
// asked before it started) instead of each partition asking on its own phase.
func (g *Guard) check() {
	interval := g.Interval
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTimer(untilTick(time.Now(), interval))
	defer t.Stop()
	for range t.C {
		g.mu.Lock()
		if len(g.watched) == 0 {
			g.checking = false
			g.mu.Unlock()
			return
		}
		ws := make([]*watch, 0, len(g.watched))
		for w := range g.watched {
			ws = append(ws, w)
		}
		g.mu.Unlock()
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Go(func() { g.checkOne(w) })
		}
		wg.Wait()
		t.Reset(untilTick(time.Now(), interval))
	}
}

// checkOne checks one partition's log.
func (g *Guard) checkOne(w *watch) {
	if w.ctx.Err() != nil {
		return
	}
	// The position first: a batch committed while the end is read moves it past that end,
	// which is no wipe.
	at := w.next.Load()
	inc, end := g.state(w.ctx, w.partition)
	if wiped(w.stored, at, inc, end) {
		w.wiped.Store(true)
		w.cancel()
		return
	}
	if w.stored == "" && inc != "" {
		// The partition got its first record since the consumer started: remember which
		// log its offsets are positions in.
		if err := g.Offsets.SetIncarnation(w.ctx, g.Topic, w.partition, inc); err == nil {
			w.stored = inc
		}
	}
}

// untilTick is the time from now to the next multiple of interval since the Unix epoch.
func untilTick(now time.Time, interval time.Duration) time.Duration {
	return interval - time.Duration(now.UnixNano()%int64(interval))
}

// recover makes the consumer's data complete from the owner and stores the new log's start
// (offset 0; a log that trimmed it starts at its oldest record) with its incarnation.
func (g *Guard) recover(ctx context.Context, log *logrus.Entry, partition int32, st Stored, inc string, end int64) error {
	start := time.Now()
	fields := logrus.Fields{"offset": st.Next, "end": end, "seq": st.Seq}
	wipedMsg := "the log was wiped under the consumer (topic recreated, broker restarted without its data, or records deleted): "
	if truncated(st.Incarnation, st.Next, inc, end) {
		wipedMsg = "the log lost its newest records under the consumer (same log, truncated or restored from an older copy; records written since sit below the consumer's offset): "
	}
	switch {
	case g.Recover != nil:
		log.WithFields(fields).Warn(wipedMsg + "recovering from the owner")
	case st.Next > 0:
		log.WithFields(fields).Error(wipedMsg + "restarting at the new log's start; what the wiped log held beyond the offset is lost to this consumer")
	default:
		log.WithFields(fields).Warn(wipedMsg + "restarting at the new log's start")
	}
	g.Metrics.stopped(g.Topic, partition, 1)
	defer g.Metrics.stopped(g.Topic, partition, -1)
	if m, ok := g.Log.(recoveryMarker); ok {
		defer m.recovering(g.Topic, partition)()
	}
	b := newBackoff()
	for g.Recover != nil {
		err := g.Recover(ctx, partition)
		if err == nil {
			break
		}
		log.WithError(err).Warn("recovering from the owner failed; retrying")
		if werr := b.wait(ctx); werr != nil {
			return werr
		}
	}
	if err := g.Offsets.Reset(ctx, g.Topic, partition, 0, inc); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("reset offset of %s/%d: %w", g.Topic, partition, err)
	}
	g.Metrics.recovered(g.Topic, time.Since(start))
	log.WithField("took", time.Since(start).String()).Warn("consumer recovered; reading the new log from its start")
	return nil
}

// Sequenced applies an owner's numbered records exactly once and in order, whether they
// come from the log or from the owner. The owner numbers each record in its partition
// densely from 1, in the transaction that stores what the record reports, and keeps the
// records for a replay window; a reader stores the last number it applied with its data
// (OffsetStore.SaveSeq, in the same transaction). Records at or below it are skipped; a
// number beyond the next one is a gap, filled from Fetch before the record is applied.
type Sequenced struct {
	// Seq reads a record's number (0: the record has none, as those written before numbers
	// existed; it is applied without a check).
	Seq func(value []byte) (int64, error)
	// Fetch returns the owner's records of partition numbered above after, in order, at
	// most a page of them; none once the reader has them all. When the owner no longer
	// keeps the record after after (older than its replay window), it returns a
	// *ReplayGoneError.
	Fetch func(ctx context.Context, partition int32, after int64) ([][]byte, error)
	// Logger and Metrics, if set, report records lost past the owner's replay window
	// (see CatchUp); consumers set them with Reporting.
	Logger  *logrus.Entry
	Metrics *Metrics
}

// ReplayGoneError is Fetch's error when the owner no longer keeps the records a reader
// asks for: they are older than its replay window. Oldest is the number of the oldest
// record it still keeps (the number after its last one when it keeps none).
type ReplayGoneError struct {
	Oldest int64
}

func (e *ReplayGoneError) Error() string {
	return fmt.Sprintf("the owner keeps records from %d only (replay window)", e.Oldest)
}

// Reporting is a copy of s that reports lost records to logger and metrics.
func (s *Sequenced) Reporting(logger *logrus.Entry, metrics *Metrics) *Sequenced {
	c := *s
	c.Logger, c.Metrics = logger, metrics
	return &c
}

// SeqApply applies recs in one transaction that also stores seq (when above 0) and next,
// the log offset after them (when above 0: records fetched from the owner have Offset -1
// and move no offset). recs may be empty: then only the position is stored (the log's
// records were all applied before).
type SeqApply func(ctx context.Context, recs []Record, seq, next int64) error

// Apply applies the log's records recs for a reader that last applied number last, and
// returns the new last. apply receives runs of records in order: those from the log, and
// those fetched from the owner to fill a gap (Offset -1). The offset after recs is stored
// even when every record was skipped.
func (s *Sequenced) Apply(ctx context.Context, topic string, partition int32, last int64, recs []Record, apply SeqApply) (int64, error) {
	var run []Record
	runSeq := last
	var saved int64
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		next := run[len(run)-1].Offset + 1
		if err := apply(ctx, run, runSeq, next); err != nil {
			return err
		}
		last, run, saved = runSeq, nil, next
		return nil
	}
	for _, r := range recs {
		seq, err := s.Seq(r.Value)
		if err != nil || seq == 0 {
			run = append(run, r) // the reader's handler dead-letters or applies it
			continue
		}
		if seq <= runSeq {
			continue
		}
		if seq > runSeq+1 && runSeq > 0 {
			if err := flush(); err != nil {
				return last, err
			}
			if last, err = s.CatchUp(ctx, topic, partition, last, seq-1, apply); err != nil {
				return last, err
			}
			if seq != last+1 {
				return last, fmt.Errorf("%s/%d: the owner has no records %d to %d", topic, partition, last+1, seq-1)
			}
		}
		run = append(run, r)
		runSeq = seq
	}
	if err := flush(); err != nil {
		return last, err
	}
	if len(recs) == 0 || saved >= recs[len(recs)-1].Offset+1 {
		return last, nil
	}
	return last, apply(ctx, nil, last, recs[len(recs)-1].Offset+1)
}

// CatchUp applies the owner's records after last, up to until (0: all of them), and
// returns the new last.
//
// A reader further behind than the owner's replay window cannot get the records it lacks
// from anyone: retrying would stop it forever. It goes on from the oldest record the owner
// still keeps, and the records it skipped are reported (an error naming topic, partition
// and numbers; dendrite_eventlog_replay_lost_records_total): what they changed reaches it
// only through the owner's query APIs, as later records refer to it.
func (s *Sequenced) CatchUp(ctx context.Context, topic string, partition int32, last, until int64, apply SeqApply) (int64, error) {
	for until == 0 || last < until {
		values, err := s.Fetch(ctx, partition, last)
		var gone *ReplayGoneError
		if errors.As(err, &gone) && gone.Oldest > last+1 {
			to := gone.Oldest - 1
			if until > 0 {
				to = min(to, until)
			}
			if last, err = s.skipLost(ctx, topic, partition, last, to, apply); err != nil {
				return last, err
			}
			continue
		}
		if err != nil {
			return last, fmt.Errorf("fetch %s/%d after %d from the owner: %w", topic, partition, last, err)
		}
		var recs []Record
		seq := last
		for _, v := range values {
			n, err := s.Seq(v)
			if err != nil || n <= seq || (until > 0 && n > until) {
				continue
			}
			recs = append(recs, Record{Topic: topic, Partition: partition, Offset: -1, Value: v})
			seq = n
		}
		if len(recs) == 0 {
			return last, nil
		}
		if err := apply(ctx, recs, seq, 0); err != nil {
			return last, err
		}
		last = seq
	}
	return last, nil
}

// skipLost stores to as the last number applied in place of last, reporting the records
// in between as lost: the owner no longer keeps them.
func (s *Sequenced) skipLost(ctx context.Context, topic string, partition int32, last, to int64, apply SeqApply) (int64, error) {
	if err := apply(ctx, nil, to, 0); err != nil {
		return last, err
	}
	if s.Logger != nil {
		s.Logger.WithFields(logrus.Fields{"topic": topic, "partition": partition, "from_seq": last + 1, "to_seq": to}).
			Error("the reader is further behind than the owner's replay window: these records are lost to it; going on from the oldest record the owner keeps (raise the replay window, or rebuild the reader's database)")
	}
	s.Metrics.replayLost(topic, to-last)
	return to, nil
}
