// Package internal is the roomserver's implementation: the input path that places events
// in rooms, and the query API.
package internal

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// Inputer consumes the roomserver's partitions of InputRoomEvent on the one consumer
// runtime (eventlog.Consumer). Each partition is one goroutine, so a room's events are
// applied strictly in log order while rooms in other partitions proceed in parallel. A
// batch of records is applied in one transaction that also stores the partition's next
// offset and the outbox of OutputRoomEvents; the outputs are produced after the commit and
// only then are the writers told the results.
//
// The runtime's poison policy decides what a failure costs. A record that does not decode
// is dead-lettered at once (eventlog.Poison) and its writer gets M_BAD_JSON. A failure
// that says the database is unavailable (sqlutil.IsUnavailable: unreachable, shutting down,
// locked, out of connections or disk) is transient to the runtime: the record is retried
// without bound and the partition reported stuck, so an outage never dead-letters a
// client's message. Producing the outputs after the commit retries until it succeeds, so a
// log that is down holds the partition too. Any other failure (the database refusing what
// the record holds, an output that does not encode) is the record's own: after
// MaxAttempts attempts it is dead-lettered and its writer gets a 500 M_UNKNOWN at once;
// the records after it go on. Events the room refuses are not failures: their rejections
// are the writers' results.
type Inputer struct {
	DB storage.Database
	// SQL is the database DB writes to, where the consumer runtime writes dead letters.
	SQL         *sqlutil.DB
	Log         eventlog.Log
	Offsets     *eventlog.OffsetStore
	InputTopic  string
	OutputTopic string
	Partitions  []int32
	ServerName  spec.ServerName
	KeyID       gomatrixserverlib.KeyID
	Key         ed25519.PrivateKey
	Logger      *logrus.Entry
	Metrics     *Metrics
	// LogMetrics, if set, counts the records consumed, failed and dead-lettered.
	LogMetrics *eventlog.Metrics
	// CacheBudget is the process's cache budget (global.cache.max_bytes); the roomserver's
	// caches take their shares of it and report themselves on Registerer (may be nil).
	CacheBudget caching.Budget
	Registerer  prometheus.Registerer
	// OutputWindow is how long produced OutputRoomEvent records stay in the outbox for
	// replay (QueryOutputRecords); negative keeps them forever.
	OutputWindow time.Duration
	// ResultWindow is how long a processed message's results are kept for its writer to
	// collect (QueryInputResult): twice room_server.input_wait_timeout, how long writers
	// wait; a minute when not positive.
	ResultWindow time.Duration

	db         storage.Database
	cache      *cache
	results    *results
	produced   *producedOutbox
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	key        ed25519.PrivateKey
}

// NewInputer prepares an Inputer; Run starts it.
func NewInputer(in Inputer) *Inputer {
	in.db = in.DB
	in.cache = newCache(in.DB, in.CacheBudget, in.Registerer)
	in.results = newResults(in.Partitions, in.ResultWindow)
	in.produced = &producedOutbox{}
	in.serverName, in.keyID, in.key = in.ServerName, in.KeyID, in.Key
	return &in
}

// Run flushes what an earlier run stored but did not produce, then consumes every owned
// partition until ctx ends. Every partition runs under an eventlog.Guard (Guarded): when
// the input log is wiped, the partition starts again at the new log's start. Nothing is
// recovered: a message lost with the log was never acknowledged (its writer is still
// waiting, or got 503), and the client's retry with the same transaction ID is applied as
// a new message, or confirmed with the stored event (see pending).
func (in *Inputer) Run(ctx context.Context) error {
	pending, err := in.db.Outbox(ctx)
	if err != nil {
		return fmt.Errorf("load roomserver outbox: %w", err)
	}
	pending = in.owned(pending)
	if err = in.completeOutputs(ctx, pending); err != nil {
		return fmt.Errorf("load roomserver outbox: %w", err)
	}
	if err = in.flush(ctx, pending); err != nil {
		return err
	}
	c := &eventlog.Consumer{Log: in.Log, DB: in.SQL, Offsets: in.Offsets, Topic: in.InputTopic, Partitions: in.Partitions,
		Name: "roomserver", Guarded: true,
		Prepare: in.prepareBatch, Applied: in.results.advance, DeadLettered: in.deadLettered,
		Logger: in.Logger, Metrics: in.LogMetrics}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.Run(ctx) })
	g.Go(func() error { return in.pruneOutbox(ctx) })
	err = g.Wait()
	in.markProduced(context.Background())
	if errors.Is(err, context.Canceled) || errors.Is(err, eventlog.ErrClosed) {
		return nil
	}
	return err
}

// idleOutboxMark is how long produced outbox rows wait for the next write transaction to
// mark them produced before they are marked on their own.
const idleOutboxMark = time.Second

// producedOutbox are outbox rows already produced and not yet marked so. The next write
// transaction marks them, which saves a transaction per batch; when no batch comes within
// idleOutboxMark a timer marks them. A row produced but not marked when the process dies is
// produced again at start-up, which consumers skip by its sequence number. Marked rows
// stay for replay until pruneOutbox deletes them.
type producedOutbox struct {
	mu    sync.Mutex
	seqs  []int64
	timer *time.Timer
}

// add records produced rows and makes sure they are deleted soon.
func (in *Inputer) addProduced(seqs []int64) {
	in.produced.mu.Lock()
	defer in.produced.mu.Unlock()
	in.produced.seqs = append(in.produced.seqs, seqs...)
	if in.produced.timer == nil {
		in.produced.timer = time.AfterFunc(idleOutboxMark, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			in.markProduced(ctx)
		})
	}
}

// takeProduced hands the rows to mark to a write transaction, which gives them back with
// returnProduced if it fails.
func (in *Inputer) takeProduced() []int64 {
	in.produced.mu.Lock()
	defer in.produced.mu.Unlock()
	seqs := in.produced.seqs
	in.produced.seqs = nil
	return seqs
}

func (in *Inputer) returnProduced(seqs []int64) {
	if len(seqs) == 0 {
		return
	}
	in.produced.mu.Lock()
	defer in.produced.mu.Unlock()
	in.produced.seqs = append(in.produced.seqs, seqs...)
}

// markProduced marks the produced rows no write transaction took.
func (in *Inputer) markProduced(ctx context.Context) {
	in.produced.mu.Lock()
	seqs := in.produced.seqs
	in.produced.seqs = nil
	if in.produced.timer != nil {
		in.produced.timer.Stop()
		in.produced.timer = nil
	}
	in.produced.mu.Unlock()
	if len(seqs) == 0 {
		return
	}
	if err := in.db.MarkProduced(ctx, seqs); err != nil {
		// The outputs went out; leaving them unmarked only means they are produced
		// again after a restart, which consumers skip by sequence number.
		in.Logger.WithError(err).Warn("marking roomserver outputs produced failed")
	}
}

// pruneOutbox deletes, every half window (between a second and pruneInterval), the produced
// outputs older than OutputWindow
// (never with a negative window). Any shard may prune any produced row: they share the rule.
func (in *Inputer) pruneOutbox(ctx context.Context) error {
	if in.OutputWindow < 0 {
		return nil
	}
	t := time.NewTicker(min(max(in.OutputWindow/2, time.Second), pruneInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := in.db.PruneOutbox(ctx, time.Now().Add(-in.OutputWindow)); err != nil && ctx.Err() == nil {
			in.Logger.WithError(err).Warn("pruning roomserver outbox failed")
		}
	}
}

// pruneInterval is how often, at most, produced outputs past the replay window are deleted.
const pruneInterval = 10 * time.Minute

// owned keeps the outbox entries of rooms in this shard's partitions. Shards may share one
// database: another shard's entries are its own to produce, in its rooms' order.
func (in *Inputer) owned(outbox []storage.Outbound) []storage.Outbound {
	n := in.Log.Partitions(in.InputTopic)
	var out []storage.Outbound
	for _, o := range outbox {
		if slices.Contains(in.Partitions, eventlog.PartitionFor([]byte(o.RoomID), n)) {
			out = append(out, o)
		}
	}
	return out
}

// errUndecodable marks the failure of a record that does not decode.
var errUndecodable = errors.New("undecodable roomserver input")

// batch is a batch of input records between the phases of the consumer runtime: decoded,
// with what prepare loaded, then the rooms its write transaction placed events in.
type batch struct {
	in        *Inputer
	start     time.Time
	partition int32
	msgs      []*api.InputRoomEvents
	offsets   []int64
	ids       []string
	results   [][]api.Result
	kept      [][]int
	heads     map[string]*roomHead
	txns      map[string]map[api.TransactionID]string
	rooms     map[string]*roomTx
}

// prepareBatch is the runtime's first phase, outside any transaction: it decodes the
// records and loads what the write transaction needs (prepare).
func (in *Inputer) prepareBatch(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	b := &batch{in: in, start: time.Now(), partition: recs[0].Partition, msgs: make([]*api.InputRoomEvents, len(recs)),
		offsets: make([]int64, len(recs)), ids: make([]string, len(recs)), results: make([][]api.Result, len(recs)), kept: make([][]int, len(recs))}
	for i, rec := range recs {
		b.offsets[i] = rec.Offset
		msg, err := decodeInput(rec.Value)
		if err != nil {
			return eventlog.Step{}, eventlog.Poison(fmt.Errorf("%w: %v", errUndecodable, err))
		}
		b.ids[i] = msg.MessageID
		if msg.Remote() {
			b.results[i] = make([]api.Result, len(msg.Events))
			msg, b.kept[i] = withoutUnstorable(msg, b.results[i])
		}
		b.msgs[i] = msg
	}
	var err error
	if b.heads, b.txns, err = in.prepare(ctx, b.msgs); err != nil {
		return eventlog.Step{}, err
	}
	return eventlog.Step{Commit: b.commit, After: b.after}, nil
}

// commit is the runtime's second phase: one write transaction places every room's events
// with one roomTx per room (local and remote messages alike, in log order), marks the
// produced outbox rows and saves cp, the partition's next offset.
func (b *batch) commit(ctx context.Context, cp eventlog.Checkpoint) error {
	in := b.in
	produced := in.takeProduced()
	err := in.db.Write(ctx, func(w storage.Writer) error {
		b.rooms = map[string]*roomTx{}
		if err := w.MarkProduced(produced); err != nil {
			return fmt.Errorf("mark produced outputs: %w", err)
		}
		for i, msg := range b.msgs {
			rt := b.rooms[msg.RoomID]
			if rt == nil {
				rt = newRoomTx(in, w, msg.RoomID, b.heads[msg.RoomID], maps.Clone(b.txns[msg.RoomID]))
				b.rooms[msg.RoomID] = rt
			}
			var err error
			if b.kept[i] != nil {
				err = rt.applyRemote(ctx, msg, b.results[i], b.kept[i])
			} else {
				b.results[i], err = rt.applyLocal(ctx, msg)
			}
			if err != nil {
				return err
			}
		}
		for _, rt := range b.rooms {
			if rt.headChanged {
				if err := w.UpdateRoom(&rt.h.room); err != nil {
					return fmt.Errorf("update room %s: %w", rt.roomID, err)
				}
			}
		}
		return w.SaveOffset(cp.Topic, cp.Partition, cp.Next)
	})
	if err != nil {
		in.returnProduced(produced)
		return err
	}
	return nil
}

// after is the runtime's third phase, once the batch committed: it updates the caches,
// produces the outputs and only then records the writers' results, which the runtime's
// Applied (results.advance) hands them.
func (b *batch) after(ctx context.Context) {
	in := b.in
	var outbound []storage.Outbound
	accepted := 0
	for _, rt := range b.rooms {
		for _, c := range rt.inserted {
			in.cache.putEvent(c.nid, c.pdu)
		}
		in.cache.dropEvents(rt.redacted)
		if rt.headChanged {
			in.cache.setHead(rt.h)
		}
		outbound = append(outbound, rt.outbound...)
		accepted += len(rt.inserted)
	}
	slices.SortFunc(outbound, func(a, b storage.Outbound) int { return cmp.Compare(a.Seq, b.Seq) })
	if in.flush(ctx, outbound) != nil {
		// ctx ended: the outputs stay in the outbox, produced at the next start.
		return
	}
	in.results.record(b.partition, b.offsets, b.ids, b.results)
	in.Metrics.observeBatch(len(b.msgs), accepted, time.Since(b.start))
}

// deadLettered tells the writer of a dead-lettered record that it failed, before the
// runtime's Applied passes it: M_BAD_JSON for every event of a record that does not
// decode, else 500 M_UNKNOWN.
func (in *Inputer) deadLettered(partition int32, r eventlog.Record, cause error) {
	var head struct {
		MessageID string            `json:"message_id"`
		Events    []json.RawMessage `json:"events"`
	}
	_ = json.Unmarshal(r.Value, &head) // a record that is not even this leaves one result without an ID
	err := matrixerr.Unknown("the roomserver could not apply the event")
	if errors.Is(cause, errUndecodable) {
		err = matrixerr.BadJSON("undecodable input")
	}
	in.results.record(partition, []int64{r.Offset}, []string{head.MessageID}, [][]api.Result{failAll(max(len(head.Events), 1), err)})
}

// prepare does, before the batch's write transaction, what cannot be done inside it: it
// loads the head of every room of the batch, the stored transactions among the batch's
// transaction IDs (so that a repeated send returns the first event), and gives a NID to
// every type and state key the batch's events hold or need for their auth checks.
func (in *Inputer) prepare(ctx context.Context, msgs []*api.InputRoomEvents) (map[string]*roomHead, map[string]map[api.TransactionID]string, error) {
	heads := map[string]*roomHead{}
	asked := map[string][]storage.Transaction{}
	typeNames := []string{spec.MRoomCreate, spec.MRoomPowerLevels, spec.MRoomJoinRules, spec.MRoomMember, spec.MRoomHistoryVisibility, spec.MRoomThirdPartyInvite}
	keys := []string{""}
	for _, msg := range msgs {
		if _, ok := heads[msg.RoomID]; !ok {
			h, err := in.cache.head(ctx, msg.RoomID)
			if err != nil {
				return nil, nil, err
			}
			heads[msg.RoomID] = h
		}
		for _, ie := range msg.Events {
			if t := ie.TxnID; t != nil {
				asked[msg.RoomID] = append(asked[msg.RoomID], storage.Transaction{UserID: t.UserID, DeviceID: t.DeviceID, TxnID: t.TransactionID})
			}
			if pe := ie.Proto; pe != nil {
				typeNames = append(typeNames, pe.Type)
				if pe.StateKey != nil {
					keys = append(keys, *pe.StateKey)
				}
			}
			if ie.Event == nil || ie.Event.PDU == nil {
				continue
			}
			ev := ie.Event.PDU
			typeNames = append(typeNames, ev.Type())
			keys = append(keys, string(ev.SenderID()))
			if sk := ev.StateKey(); sk != nil {
				keys = append(keys, *sk)
			}
			for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples() {
				typeNames = append(typeNames, t.EventType)
				keys = append(keys, t.StateKey)
			}
		}
	}
	if _, err := in.cache.typeNIDs(ctx, typeNames...); err != nil {
		return nil, nil, fmt.Errorf("assign type NIDs: %w", err)
	}
	if _, err := in.cache.keyNIDs(ctx, keys...); err != nil {
		return nil, nil, fmt.Errorf("assign state key NIDs: %w", err)
	}
	txns := map[string]map[api.TransactionID]string{}
	for roomID, h := range heads {
		txns[roomID] = map[api.TransactionID]string{}
		if h == nil || len(asked[roomID]) == 0 {
			continue
		}
		stored, err := in.db.Transactions(ctx, h.room.NID, asked[roomID])
		if err != nil {
			return nil, nil, fmt.Errorf("load transactions of %s: %w", roomID, err)
		}
		for _, t := range stored {
			txns[roomID][api.TransactionID{UserID: t.UserID, DeviceID: t.DeviceID, TransactionID: t.TxnID}] = t.EventID
		}
	}
	return heads, txns, nil
}

func decodeInput(b []byte) (*api.InputRoomEvents, error) {
	var msg api.InputRoomEvents
	if err := json.Unmarshal(b, &msg); err != nil {
		return nil, err
	}
	return &msg, nil
}

func failAll(n int, err *matrixerr.Error) []api.Result {
	res := make([]api.Result, n)
	for i := range res {
		res[i] = api.Result{Err: err}
	}
	return res
}

// flush produces outbound OutputRoomEvents; the next write transaction (or a timer)
// removes them from the outbox. It retries until it succeeds or ctx ends: the events are
// committed, so they must go out.
func (in *Inputer) flush(ctx context.Context, outbound []storage.Outbound) error {
	if len(outbound) == 0 {
		return nil
	}
	msgs := make([]eventlog.Message, len(outbound))
	seqs := make([]int64, len(outbound))
	for i, o := range outbound {
		msgs[i] = eventlog.Message{Key: []byte(o.RoomID), Value: o.Payload}
		seqs[i] = o.Seq
	}
	backoff := 100 * time.Millisecond
	for {
		_, err := in.Log.Produce(ctx, in.OutputTopic, msgs...)
		if err == nil {
			break
		}
		in.Logger.WithError(err).Warn("producing room output failed; retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	in.addProduced(seqs)
	return nil
}

// storeOutput numbers an output in its OutputRoomEvent partition and stores it in the
// outbox, inside the write transaction; it is produced after the commit and kept for
// replay (QueryOutputRecords) for the OutputWindow. When nid is not 0 the output's event is
// that stored event: the row keeps its number instead of its JSON (withoutEvent), which
// completeOutputs puts back when the row is read.
func (in *Inputer) storeOutput(w storage.Writer, roomID string, out api.OutputRoomEvent, nid types.EventNID) (storage.Outbound, error) {
	partition := eventlog.PartitionFor([]byte(roomID), in.Log.Partitions(in.OutputTopic))
	seq, err := w.NextOutputSeq(partition)
	if err != nil {
		return storage.Outbound{}, fmt.Errorf("number output: %w", err)
	}
	out.Seq = seq
	payload, err := json.Marshal(out)
	if err != nil {
		return storage.Outbound{}, fmt.Errorf("encode output: %w", err)
	}
	o := storage.Outbound{RoomID: roomID, Partition: partition, PartitionSeq: seq, Payload: payload}
	stored := o
	if nid != 0 {
		stored.EventNID = nid
		if stored.Payload, err = json.Marshal(withoutEvent(out)); err != nil {
			return storage.Outbound{}, fmt.Errorf("encode output: %w", err)
		}
	}
	if o.Seq, err = w.InsertOutbox(stored); err != nil {
		return storage.Outbound{}, fmt.Errorf("store output: %w", err)
	}
	return o, nil
}

// withoutEvent is out with its event left out (encoded as null).
func withoutEvent(out api.OutputRoomEvent) api.OutputRoomEvent {
	switch {
	case out.NewRoomEvent != nil:
		e := *out.NewRoomEvent
		e.Event = api.Event{}
		out.NewRoomEvent = &e
	case out.BackfilledEvent != nil:
		e := *out.BackfilledEvent
		e.Event = api.Event{}
		out.BackfilledEvent = &e
	}
	return out
}

// completeOutputs puts back into outbox rows read from the database the events that
// storeOutput left out, as roomserver_events holds them now: an event redacted since its
// output was stored comes back redacted (its redaction's own output follows it).
func (in *Inputer) completeOutputs(ctx context.Context, rows []storage.Outbound) error {
	for chunk := range slices.Chunk(rows, maxOutputRecords) {
		var nids []types.EventNID
		for _, o := range chunk {
			if o.EventNID != 0 {
				nids = append(nids, o.EventNID)
			}
		}
		if len(nids) == 0 {
			continue
		}
		stored, err := in.db.EventsByNID(ctx, nids)
		if err != nil {
			return fmt.Errorf("load the events of stored outputs: %w", err)
		}
		byNID := make(map[types.EventNID]*storage.Event, len(stored))
		for i := range stored {
			byNID[stored[i].NID] = &stored[i]
		}
		for i := range chunk {
			if chunk[i].EventNID == 0 {
				continue
			}
			if chunk[i].Payload, err = in.withEvent(ctx, chunk[i], byNID[chunk[i].EventNID]); err != nil {
				return fmt.Errorf("output %d of partition %d: %w", chunk[i].PartitionSeq, chunk[i].Partition, err)
			}
		}
	}
	return nil
}

// withEvent is o's payload with ev in place of the event left out.
func (in *Inputer) withEvent(ctx context.Context, o storage.Outbound, ev *storage.Event) ([]byte, error) {
	if ev == nil {
		return nil, fmt.Errorf("its event (NID %d) is not stored", o.EventNID)
	}
	h, err := in.cache.head(ctx, o.RoomID)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("its room %s is not stored", o.RoomID)
	}
	pdu, err := api.ParseTrusted(h.room.RoomVersion, ev.EventID, ev.JSON, ev.Redacted)
	if err != nil {
		return nil, err
	}
	var out api.OutputRoomEvent
	if err = json.Unmarshal(o.Payload, &out); err != nil {
		return nil, fmt.Errorf("decode stored output: %w", err)
	}
	switch {
	case out.NewRoomEvent != nil:
		out.NewRoomEvent.Event = api.Event{PDU: pdu}
	case out.BackfilledEvent != nil:
		out.BackfilledEvent.Event = api.Event{PDU: pdu}
	}
	return json.Marshal(out)
}

// cachedEvent is an event stored by a batch, for the cache once the batch committed.
type cachedEvent struct {
	nid types.EventNID
	pdu gomatrixserverlib.PDU
}

// redactsOf is the target of a redaction event, "" for every other event.
func redactsOf(ev gomatrixserverlib.PDU) string {
	if ev.Type() != spec.MRoomRedaction {
		return ""
	}
	return ev.Redacts()
}
