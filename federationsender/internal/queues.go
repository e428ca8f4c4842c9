// Package internal is the federationsender's logic: the outbound queue of every destination
// server, each drained by its own worker into /send transactions with retries, backoff and a
// blacklist.
package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/federationsender/api"
	"github.com/matrix-org/dendrite/federationsender/storage"
)

// Transaction limits from the spec (server-server API, "Transactions").
const (
	MaxPDUsPerTransaction = 50
	MaxEDUsPerTransaction = 100
)

// Client sends transactions (internal/fedclient in production).
type Client interface {
	SendTransaction(ctx context.Context, t gomatrixserverlib.Transaction) (fclient.RespSend, error)
}

// Options configure Queues.
type Options struct {
	ServerName spec.ServerName
	DB         storage.Database
	Client     Client
	// MinBackoff is the wait after a destination's first failure; each further failure
	// doubles it, up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// BlacklistAfter consecutive failures blacklist a destination for BlacklistFor: no
	// attempt until then, unless the server shows up (PerformServerAlive).
	BlacklistAfter int
	BlacklistFor   time.Duration
	// RequestTimeout bounds each transaction.
	RequestTimeout time.Duration
	Logger         *logrus.Entry
	Metrics        *Metrics
}

// Queues are the outbound queues of every destination. Items are stored by the consumers
// (storage.Database.Enqueue, in their transactions); Wake, called once those commit,
// starts or nudges the destination's worker. A worker runs while its queue has items: it
// sends one transaction at a time, in queue order, and deletes what the destination
// acknowledged. Queues implements api.SenderAPI.
type Queues struct {
	o Options

	mu    sync.Mutex
	dests map[string]*destination
	// starting are workers to start; kick tells Run.
	starting []*destination
	kick     chan struct{}
	txnSeq   atomic.Int64
}

var _ api.SenderAPI = (*Queues)(nil)

// destination is one server's queue state. Fields are guarded by Queues.mu.
type destination struct {
	name string
	// running is set while a worker runs for this destination.
	running bool
	// wake nudges the worker: new items were queued.
	wake chan struct{}
	// alive interrupts a backoff or blacklist wait: the server was seen.
	alive chan struct{}
	// failures counts consecutive failed transactions; until is when the next attempt
	// may start (zero: now).
	failures int
	until    time.Time
}

// NewQueues makes the queues; Run starts the workers.
func NewQueues(o Options) *Queues {
	return &Queues{o: o, dests: map[string]*destination{}, kick: make(chan struct{}, 1)}
}

func (q *Queues) get(name string) *destination {
	d := q.dests[name]
	if d == nil {
		d = &destination{name: name, wake: make(chan struct{}, 1), alive: make(chan struct{}, 1)}
		q.dests[name] = d
	}
	return d
}

// Wake tells the workers of destinations that items were queued (and committed) for them.
func (q *Queues) Wake(destinations []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, name := range destinations {
		q.wakeLocked(q.get(name))
	}
}

func (q *Queues) wakeLocked(d *destination) {
	if d.running {
		signal(d.wake)
		return
	}
	d.running = true
	q.starting = append(q.starting, d)
	signal(q.kick)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// PerformServerAlive implements api.SenderAPI.
func (q *Queues) PerformServerAlive(_ context.Context, req *api.PerformServerAliveRequest) (*api.PerformServerAliveResponse, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	d := q.dests[req.ServerName]
	if d == nil || (d.failures == 0 && d.until.IsZero()) {
		return &api.PerformServerAliveResponse{}, nil
	}
	q.o.Logger.WithField("destination", d.name).Info("destination is back; resuming its queue")
	d.failures, d.until = 0, time.Time{}
	signal(d.alive)
	q.wakeLocked(d)
	return &api.PerformServerAliveResponse{}, nil
}

// Run starts a worker for every destination with queued items, then for every destination
// woken, until ctx ends; it returns once every worker has stopped.
func (q *Queues) Run(ctx context.Context) error {
	names, err := q.o.DB.QueuedDestinations(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a clean shutdown, not a failure
		}
		return fmt.Errorf("list queued destinations: %w", err)
	}
	q.Wake(names)
	var wg sync.WaitGroup
	defer wg.Wait()
	gauges := time.NewTicker(10 * time.Second)
	defer gauges.Stop()
	q.updateGauges(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-gauges.C:
			q.updateGauges(ctx)
		case <-q.kick:
			q.mu.Lock()
			start := q.starting
			q.starting = nil
			q.mu.Unlock()
			for _, d := range start {
				wg.Add(1)
				go func() {
					defer wg.Done()
					q.work(ctx, d)
				}()
			}
		}
	}
}

// updateGauges refreshes the queue depth gauges.
func (q *Queues) updateGauges(ctx context.Context) {
	depth, err := q.o.DB.QueueDepth(ctx)
	if err != nil {
		q.o.Logger.WithError(err).Warn("counting the queues failed")
		return
	}
	q.o.Metrics.queued.WithLabelValues("pdu").Set(float64(depth.PDUs))
	q.o.Metrics.queued.WithLabelValues("edu").Set(float64(depth.EDUs))
	q.o.Metrics.destinations.WithLabelValues("queued").Set(float64(depth.Destinations))
	var backoff, blacklisted int
	now := time.Now()
	q.mu.Lock()
	for _, d := range q.dests {
		switch {
		case d.failures >= q.o.BlacklistAfter && d.until.After(now):
			blacklisted++
		case d.until.After(now):
			backoff++
		}
	}
	q.mu.Unlock()
	q.o.Metrics.destinations.WithLabelValues("backoff").Set(float64(backoff))
	q.o.Metrics.destinations.WithLabelValues("blacklisted").Set(float64(blacklisted))
}

// work drains d's queue, one transaction at a time, until it is empty or ctx ends.
func (q *Queues) work(ctx context.Context, d *destination) {
	log := q.o.Logger.WithField("destination", d.name)
	for ctx.Err() == nil {
		if !q.waitUntilDue(ctx, d) {
			return
		}
		txn, err := q.o.DB.NextTransaction(ctx, d.name, MaxPDUsPerTransaction, MaxEDUsPerTransaction, q.newTxnID)
		if err != nil {
			log.WithError(err).Warn("reading the queue failed; retrying")
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if txn == nil {
			q.mu.Lock()
			select {
			case <-d.wake:
				q.mu.Unlock()
				continue
			default:
			}
			d.running = false // under the lock Wake checks, so no item is left without a worker
			q.mu.Unlock()
			return
		}
		err = q.send(ctx, txn)
		switch {
		case err == nil:
			q.succeeded(d)
		case isPermanent(err):
			// The destination refuses this transaction as it is: retrying cannot help, and
			// holding it would block the queue forever.
			log.WithError(err).WithField("txn_id", txn.TxnID).Error("destination rejected transaction; dropping it")
			q.o.Metrics.transactions.WithLabelValues("rejected").Inc()
		default:
			if ctx.Err() == nil {
				q.o.Metrics.transactions.WithLabelValues("failed").Inc()
				q.failed(d, log, err)
			}
			continue
		}
		if err := q.o.DB.DeleteTransaction(ctx, d.name, txn.TxnID); err != nil && ctx.Err() == nil {
			// The transaction is sent again, with the same ID: the destination dedupes it.
			log.WithError(err).Warn("deleting a sent transaction failed")
		}
	}
}

// waitUntilDue waits out d's backoff or blacklist; false when ctx ended.
func (q *Queues) waitUntilDue(ctx context.Context, d *destination) bool {
	for {
		q.mu.Lock()
		wait := time.Until(d.until)
		q.mu.Unlock()
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-d.alive:
		case <-t.C:
		}
		t.Stop()
	}
}

func (q *Queues) succeeded(d *destination) {
	q.mu.Lock()
	d.failures, d.until = 0, time.Time{}
	q.mu.Unlock()
	q.o.Metrics.transactions.WithLabelValues("sent").Inc()
}

// failed counts a failure and sets when d may be tried again.
func (q *Queues) failed(d *destination, log *logrus.Entry, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	d.failures++
	backoff := q.o.MinBackoff
	for i := 1; i < d.failures && backoff < q.o.MaxBackoff; i++ {
		backoff *= 2
	}
	backoff = min(backoff, q.o.MaxBackoff)
	fields := logrus.Fields{"failures": d.failures}
	if d.failures >= q.o.BlacklistAfter {
		backoff = q.o.BlacklistFor
		log.WithError(err).WithFields(fields).WithField("blacklisted_for", backoff.String()).Warn("destination blacklisted after repeated failures")
	} else {
		log.WithError(err).WithFields(fields).WithField("retry_in", backoff.String()).Info("sending to destination failed; backing off")
	}
	d.until = time.Now().Add(backoff)
	// A wake-up for new items must not cut the wait short; only the server's return does.
	select {
	case <-d.alive:
	default:
	}
}

// send sends one transaction. The destination's answer per PDU is not an error: a PDU it
// rejected is not sent again (the spec leaves it to the destination).
func (q *Queues) send(ctx context.Context, t *storage.Transaction) error {
	txn := gomatrixserverlib.Transaction{
		TransactionID: gomatrixserverlib.TransactionID(t.TxnID), Origin: q.o.ServerName, Destination: spec.ServerName(t.Destination),
		OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: make([]json.RawMessage, 0, len(t.PDUs)),
	}
	for _, p := range t.PDUs {
		txn.PDUs = append(txn.PDUs, p)
	}
	for _, e := range t.EDUs {
		var edu gomatrixserverlib.EDU
		if err := json.Unmarshal(e, &edu); err != nil {
			q.o.Logger.WithError(err).WithField("destination", t.Destination).Error("undecodable queued EDU dropped")
			continue
		}
		edu.Origin, edu.Destination = string(q.o.ServerName), t.Destination
		txn.EDUs = append(txn.EDUs, edu)
	}
	ctx, cancel := context.WithTimeout(ctx, q.o.RequestTimeout)
	defer cancel()
	start := time.Now()
	res, err := q.o.Client.SendTransaction(ctx, txn)
	q.o.Metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	q.o.Metrics.pdus.Add(float64(len(txn.PDUs)))
	q.o.Metrics.edus.Add(float64(len(txn.EDUs)))
	for id, r := range res.PDUs {
		if r.Error != "" {
			q.o.Logger.WithFields(logrus.Fields{"destination": t.Destination, "event_id": id, "error": r.Error}).Debug("destination rejected PDU")
		}
	}
	return nil
}

// isPermanent reports whether the destination answered that the request itself is wrong
// (400, 413), so that sending it again cannot succeed.
func isPermanent(err error) bool {
	var he gomatrix.HTTPError
	return errors.As(err, &he) && (he.Code == 400 || he.Code == 413)
}

// newTxnID is unique per (origin, destination) across restarts: the time plus a counter.
func (q *Queues) newTxnID() string {
	return strconv.FormatInt(time.Now().UnixMilli(), 10) + "-" + strconv.FormatInt(q.txnSeq.Add(1), 10)
}
