// Package internal is the roomserver's implementation: the input path that places events
// in rooms, and the query API.
package internal

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// Inputer consumes the roomserver's partitions of InputRoomEvent. Each partition is one
// goroutine, so a room's events are applied strictly in log order while rooms in other
// partitions proceed in parallel. A batch of records is applied in one transaction that
// also stores the partition's next offset and the outbox of OutputRoomEvents; the outputs
// are produced after the commit and only then are the writers told the results.
type Inputer struct {
	DB          storage.Database
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
	// CacheBudget is the process's cache budget (global.cache.max_bytes); the roomserver's
	// caches take their shares of it and report themselves on Registerer (may be nil).
	CacheBudget caching.Budget
	Registerer  prometheus.Registerer
	// OutputWindow is how long produced OutputRoomEvent records stay in the outbox for
	// replay (QueryOutputRecords); negative keeps them forever.
	OutputWindow time.Duration

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
	in.results = newResults(in.Partitions)
	in.produced = &producedOutbox{}
	in.serverName, in.keyID, in.key = in.ServerName, in.KeyID, in.Key
	return &in
}

// Run flushes what an earlier run stored but did not produce, then consumes every owned
// partition until ctx ends.
func (in *Inputer) Run(ctx context.Context) error {
	pending, err := in.db.Outbox(ctx)
	if err != nil {
		return fmt.Errorf("load roomserver outbox: %w", err)
	}
	if err = in.flush(ctx, in.owned(pending)); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range in.Partitions {
		g.Go(func() error { return in.consume(ctx, p) })
	}
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

// consume runs the partition under an eventlog.Guard: when the input log is wiped, the
// partition starts again at the new log's start. Nothing is recovered: a message lost with
// the log was never acknowledged (its writer is still waiting, or got 503), and the
// client's retry with the same transaction ID is applied as a new message, or confirmed
// with the stored event (see pending).
func (in *Inputer) consume(ctx context.Context, partition int32) error {
	g := &eventlog.Guard{Log: in.Log, Offsets: in.Offsets, Topic: in.InputTopic, Logger: in.Logger}
	return g.Run(ctx, partition, func(ctx context.Context, st eventlog.Stored, advanced func(int64)) error {
		next := st.Next
		in.results.start(partition, next)
		return in.Log.Consume(ctx, in.InputTopic, partition, next, func(ctx context.Context, recs []eventlog.Record) error {
			for len(recs) > 0 && recs[0].Offset < next {
				recs = recs[1:]
			}
			if len(recs) == 0 {
				return nil
			}
			if err := in.processBatch(ctx, partition, recs); err != nil {
				in.Metrics.failure()
				in.Logger.WithError(err).WithField("partition", partition).Error("roomserver input batch failed; retrying")
				return err
			}
			next = recs[len(recs)-1].Offset + 1
			advanced(next)
			return nil
		})
	})
}

// processBatch applies records of one partition. Runs of messages holding local events
// are decided against pending rooms and written in one transaction; a message holding
// events from other servers (federated, outlier) is applied alone in its own transaction,
// after what came before it was written, because it may change the room's state in ways a
// pending overlay cannot express (forks, state resolution).
func (in *Inputer) processBatch(ctx context.Context, partition int32, recs []eventlog.Record) error {
	var run []eventlog.Record
	var msgs []*api.InputRoomEvents
	for _, rec := range recs {
		msg, err := decodeInput(rec.Value)
		if err != nil {
			in.Logger.WithError(err).WithField("offset", rec.Offset).Warn("undecodable roomserver input skipped")
		}
		if msg != nil && msg.Remote() {
			if err := in.applyLocal(ctx, partition, run, msgs); err != nil {
				return err
			}
			run, msgs = nil, nil
			if err := in.applyRemote(ctx, partition, rec, msg); err != nil {
				return err
			}
			continue
		}
		run = append(run, rec)
		msgs = append(msgs, msg)
	}
	return in.applyLocal(ctx, partition, run, msgs)
}

func decodeInput(b []byte) (*api.InputRoomEvents, error) {
	var msg api.InputRoomEvents
	if err := json.Unmarshal(b, &msg); err != nil {
		return nil, err
	}
	return &msg, nil
}

// applyLocal decides and writes a run of messages holding local events (msgs[i] is nil
// for an undecodable record).
func (in *Inputer) applyLocal(ctx context.Context, partition int32, recs []eventlog.Record, msgs []*api.InputRoomEvents) error {
	if len(recs) == 0 {
		return nil
	}
	start := time.Now()
	rooms := map[string]*pendingRoom{}
	offsets := make([]int64, len(recs))
	ids := make([]string, len(recs))
	results := make([][]api.Result, len(recs))
	txns := map[string][]storage.Transaction{}
	for i, rec := range recs {
		offsets[i] = rec.Offset
		msg := msgs[i]
		if msg == nil {
			results[i] = []api.Result{{Err: matrixerr.BadJSON("undecodable input")}}
			continue
		}
		for _, ie := range msg.Events {
			if t := ie.TxnID; t != nil {
				txns[msg.RoomID] = append(txns[msg.RoomID], storage.Transaction{UserID: t.UserID, DeviceID: t.DeviceID, TxnID: t.TransactionID})
			}
		}
	}
	var accepted []*acceptedEvent
	for i, msg := range msgs {
		if msg == nil {
			continue
		}
		res, acc, err := in.processMessage(ctx, rooms, msg, txns[msg.RoomID])
		if err != nil {
			return err
		}
		results[i] = res
		ids[i] = msg.MessageID
		accepted = append(accepted, acc...)
	}
	outbound, heads, err := in.write(ctx, partition, recs[len(recs)-1].Offset+1, rooms, accepted)
	if err != nil {
		return err
	}
	for _, h := range heads {
		in.cache.setHead(h)
	}
	if err = in.flush(ctx, outbound); err != nil {
		return err
	}
	in.results.publish(partition, offsets, ids, results, recs[len(recs)-1].Offset+1)
	in.Metrics.observeBatch(len(recs), len(accepted), time.Since(start))
	return nil
}

// processMessage decides every event of one InputRoomEvents message against the pending
// rooms. It returns the results to report and the events to write.
// txns are the transaction IDs of the batch's events in the message's room.
func (in *Inputer) processMessage(ctx context.Context, rooms map[string]*pendingRoom, msg *api.InputRoomEvents, txns []storage.Transaction) ([]api.Result, []*acceptedEvent, error) {
	p, err := in.pending(ctx, rooms, msg, txns)
	if err != nil {
		var merr *matrixerr.Error
		if errors.As(err, &merr) {
			return failAll(len(msg.Events), merr), nil, nil
		}
		return nil, nil, err
	}
	work := p.clone()
	res := make([]api.Result, len(msg.Events))
	var accepted []*acceptedEvent
	for i := range msg.Events {
		acc, err := in.checkEvent(ctx, work, &msg.Events[i])
		var merr *matrixerr.Error
		switch {
		case errors.As(err, &merr):
			if msg.Atomic {
				return failAll(len(msg.Events), merr), nil, nil
			}
			res[i] = api.Result{Err: merr}
		case err != nil:
			return nil, nil, err
		default:
			res[i] = *acc.result
			if acc.pdu != nil {
				accepted = append(accepted, acc)
			}
		}
	}
	for _, acc := range accepted {
		acc.room = work
	}
	rooms[msg.RoomID] = work
	return res, accepted, nil
}

func failAll(n int, err *matrixerr.Error) []api.Result {
	res := make([]api.Result, n)
	for i := range res {
		res[i] = api.Result{Err: err}
	}
	return res
}

// pending returns the batch's working copy of the message's room. Made for the first
// message of the room in the batch, it knows which of the batch's transaction IDs (txns)
// are stored already, so that a repeated send returns the first event.
func (in *Inputer) pending(ctx context.Context, rooms map[string]*pendingRoom, msg *api.InputRoomEvents, txns []storage.Transaction) (*pendingRoom, error) {
	if p, ok := rooms[msg.RoomID]; ok {
		return p, nil
	}
	head, err := in.cache.head(ctx, msg.RoomID)
	if err != nil {
		return nil, err
	}
	p := &pendingRoom{
		head:     head,
		roomID:   msg.RoomID,
		overlay:  map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{},
		txns:     map[api.TransactionID]string{},
		accepted: map[string]gomatrixserverlib.PDU{},
	}
	version := msg.RoomVersion
	if head != nil {
		p.exists = true
		version = head.room.RoomVersion
		p.latestIDs = head.latestIDs
		p.depth = head.room.Depth
		stored, err := in.db.Transactions(ctx, head.room.NID, txns)
		if err != nil {
			return nil, fmt.Errorf("load transactions of %s: %w", msg.RoomID, err)
		}
		for _, t := range stored {
			p.txns[api.TransactionID{UserID: t.UserID, DeviceID: t.DeviceID, TransactionID: t.TxnID}] = t.EventID
		}
	}
	if p.version, err = gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version)); err != nil {
		return nil, matrixerr.UnsupportedRoomVersion(err.Error())
	}
	return p, nil
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

// write stores the accepted events of a batch, with the new room heads, the outbox and the
// partition's next offset, in one transaction.
func (in *Inputer) write(ctx context.Context, partition int32, next int64, rooms map[string]*pendingRoom, accepted []*acceptedEvent) ([]storage.Outbound, []*roomHead, error) {
	if err := in.assignNIDs(ctx, accepted); err != nil {
		return nil, nil, err
	}
	var outbound []storage.Outbound
	// One head per room, advanced by every accepted event of the batch in order: the
	// messages of a batch each work on their own clone of the room, but all of them start
	// from the committed head and follow one another.
	heads := map[string]*roomHead{}
	var cached []cachedEvent
	var redacted []types.EventNID
	inserted := map[string]types.EventNID{}
	produced := in.takeProduced()
	err := in.db.Write(ctx, func(w storage.Writer) error {
		outbound, cached, redacted = nil, nil, nil
		clear(heads)
		clear(inserted)
		if err := w.MarkProduced(produced); err != nil {
			return fmt.Errorf("mark produced outputs: %w", err)
		}
		for _, acc := range accepted {
			h := heads[acc.room.roomID]
			if h == nil {
				h = startHead(acc.room)
				heads[acc.room.roomID] = h
			}
			nid, err := in.writeEvent(ctx, w, h, acc)
			if err != nil {
				return fmt.Errorf("store event %s: %w", acc.pdu.EventID(), err)
			}
			inserted[acc.pdu.EventID()] = nid
			if acc.redacts != nil {
				target, err := in.redact(ctx, w, h, acc.redacts, inserted)
				if err != nil {
					return fmt.Errorf("redact %s: %w", acc.redacts.EventID(), err)
				}
				redacted = append(redacted, target)
			}
			cached = append(cached, cachedEvent{nid, acc.pdu})
			o, err := in.storeOutput(w, acc.room.roomID, outputOf(acc))
			if err != nil {
				return err
			}
			outbound = append(outbound, o)
		}
		for _, h := range heads {
			if err := w.UpdateRoom(&h.room); err != nil {
				return fmt.Errorf("update room %s: %w", h.room.RoomID, err)
			}
		}
		return w.SaveOffset(in.InputTopic, partition, next)
	})
	if err != nil {
		in.returnProduced(produced)
		return nil, nil, err
	}
	for _, c := range cached {
		in.cache.putEvent(c.nid, c.pdu)
	}
	in.cache.dropEvents(redacted)
	out := make([]*roomHead, 0, len(heads))
	for _, h := range heads {
		out = append(out, h)
	}
	return outbound, out, nil
}

// storeOutput numbers an output in its OutputRoomEvent partition and stores it in the
// outbox, inside the write transaction; it is produced after the commit and kept for
// replay (QueryOutputRecords) for the OutputWindow.
func (in *Inputer) storeOutput(w storage.Writer, roomID string, out api.OutputRoomEvent) (storage.Outbound, error) {
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
	if o.Seq, err = w.InsertOutbox(o); err != nil {
		return storage.Outbound{}, fmt.Errorf("store output: %w", err)
	}
	return o, nil
}

type cachedEvent struct {
	nid types.EventNID
	pdu gomatrixserverlib.PDU
}

// startHead is a mutable copy of a room's committed head for the write transaction.
func startHead(p *pendingRoom) *roomHead {
	if p.head == nil {
		return &roomHead{room: storage.Room{RoomID: p.roomID, RoomVersion: string(p.version.Version())}, state: &types.State{}}
	}
	h := *p.head
	h.room.Latest = append([]types.EventNID(nil), p.head.room.Latest...)
	return &h
}

// assignNIDs makes sure every type and state key of the accepted events has a NID.
func (in *Inputer) assignNIDs(ctx context.Context, accepted []*acceptedEvent) error {
	var typeNames, keys []string
	for _, acc := range accepted {
		typeNames = append(typeNames, acc.pdu.Type())
		if sk := acc.pdu.StateKey(); sk != nil {
			keys = append(keys, *sk)
		}
	}
	if _, err := in.cache.typeNIDs(ctx, typeNames...); err != nil {
		return fmt.Errorf("assign type NIDs: %w", err)
	}
	if _, err := in.cache.keyNIDs(ctx, keys...); err != nil {
		return fmt.Errorf("assign state key NIDs: %w", err)
	}
	return nil
}

// writeEvent stores one event and advances the head past it.
func (in *Inputer) writeEvent(ctx context.Context, w storage.Writer, h *roomHead, acc *acceptedEvent) (types.EventNID, error) {
	ev := acc.pdu
	if h.room.NID == 0 {
		nid, err := w.InsertRoom(h.room.RoomID, h.room.RoomVersion)
		if err != nil {
			return 0, err
		}
		h.room.NID = nid
	}
	tn, err := in.cache.typeNIDs(ctx, ev.Type())
	if err != nil {
		return 0, err
	}
	row := &storage.Event{RoomNID: h.room.NID, EventID: ev.EventID(), Type: tn[ev.Type()], Depth: ev.Depth(), Before: h.room.Snapshot,
		Redacts: redactsOf(ev), JSON: ev.JSON()}
	var tuple types.StateTuple
	if sk := ev.StateKey(); sk != nil {
		kn, err := in.cache.keyNIDs(ctx, *sk)
		if err != nil {
			return 0, err
		}
		row.IsState, row.StateKey = true, kn[*sk]
		tuple = types.StateTuple{Type: row.Type, Key: row.StateKey}
	}
	nid, err := w.InsertEvent(row)
	if err != nil {
		return 0, err
	}
	if row.IsState {
		if err = in.advanceState(w, h, tuple, nid); err != nil {
			return 0, err
		}
		if ev.Type() == spec.MRoomMember {
			membership, _ := ev.Membership()
			if err = w.SetMembership(h.room.NID, storage.Membership{UserID: *ev.StateKey(), Membership: membership, EventID: ev.EventID()}); err != nil {
				return 0, err
			}
		}
	}
	if acc.txnID != nil {
		t := storage.Transaction{UserID: acc.txnID.UserID, DeviceID: acc.txnID.DeviceID, TxnID: acc.txnID.TransactionID, EventID: ev.EventID()}
		if err = w.InsertTransaction(h.room.NID, t); err != nil {
			return 0, err
		}
	}
	h.room.Latest = []types.EventNID{nid}
	h.latestIDs = []string{ev.EventID()}
	h.room.Depth = ev.Depth()
	return nid, nil
}

// advanceState makes the event current state: the changed block and a new snapshot are
// stored, every other block is shared with the previous snapshot.
func (in *Inputer) advanceState(w storage.Writer, h *roomHead, t types.StateTuple, nid types.EventNID) error {
	next := h.state.With(t, nid)
	var blockNIDs [types.Buckets]types.BlockNID
	for i, b := range next.Blocks {
		if b == nil {
			continue
		}
		if b.NID == 0 {
			bn, err := w.InsertBlock(b.Entries)
			if err != nil {
				return err
			}
			b.NID = bn
		}
		blockNIDs[i] = b.NID
	}
	snap, err := w.InsertSnapshot(h.room.NID, blockNIDs)
	if err != nil {
		return err
	}
	h.state = next
	h.room.Snapshot = snap
	return nil
}

// redact replaces the stored target by its redacted form and returns its NID.
func (in *Inputer) redact(ctx context.Context, w storage.Writer, h *roomHead, target gomatrixserverlib.PDU, inserted map[string]types.EventNID) (types.EventNID, error) {
	nid, ok := inserted[target.EventID()]
	if !ok {
		rows, err := in.db.EventsByID(ctx, []string{target.EventID()})
		if err != nil {
			return 0, err
		}
		if len(rows) == 0 {
			return 0, fmt.Errorf("redaction target %s vanished", target.EventID())
		}
		nid = rows[0].NID
	}
	redacted, err := h.redactedJSON(target)
	if err != nil {
		return 0, err
	}
	return nid, w.RedactEvent(nid, redacted)
}

func (h *roomHead) redactedJSON(target gomatrixserverlib.PDU) ([]byte, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(h.room.RoomVersion))
	if err != nil {
		return nil, err
	}
	return verImpl.RedactEventJSON(target.JSON())
}

// redactsOf is the target of a redaction event, "" for every other event.
func redactsOf(ev gomatrixserverlib.PDU) string {
	if ev.Type() != spec.MRoomRedaction {
		return ""
	}
	return ev.Redacts()
}
