package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/sirupsen/logrus"
)

// KafkaConfig configures the Kafka log. It is plain data: internal/setup fills it from the
// YAML config. Topic names are full names: callers add the prefix.
type KafkaConfig struct {
	// Config gives partition counts, retention and metrics with the embedded log's meaning.
	// Partition counts must match existing topics: PartitionFor depends on them.
	Config
	// Brokers are the bootstrap addresses, host:port.
	Brokers []string
	// ClientID names this process to the brokers (default "dendrite").
	ClientID string
	// Topics are created if missing, or checked, at start-up. Other topics are created or
	// checked on first use.
	Topics []string
	// MaxMessageBytes is the largest record the producer sends and the max.message.bytes
	// of the topics it creates (default 1 MB, Kafka's own default).
	MaxMessageBytes int
	// ReplicationFactor of the topics it creates (default 1).
	ReplicationFactor int16
	// Version is the Kafka protocol version to speak, at most the brokers' (default "3.6.0").
	Version string
}

// ErrMessageTooLarge is returned by Produce for a record over the size limit; nothing of
// that record was stored.
var ErrMessageTooLarge = errors.New("event log record too large")

// ErrPartitionMismatch is returned when an existing topic has another partition count
// than the configured one: records would go to partitions no reader expects.
var ErrPartitionMismatch = errors.New("topic partition count differs from the configured one")

// Kafka is the log on Apache Kafka, through sarama. Producing is idempotent (acks=all, one
// request in flight per broker, retries); concurrent Produce calls share the producer's
// batches and round-trips. Partitions are chosen by PartitionFor with sarama's manual
// partitioner, never by sarama's hash. Consumers read single partitions from explicit
// offsets: consumer groups are not used, offsets live in the consumers' databases.
type Kafka struct {
	cfg      KafkaConfig
	log      *logrus.Entry
	client   sarama.Client
	admin    sarama.ClusterAdmin
	producer sarama.SyncProducer
	consumer sarama.Consumer
	// producerMu guards producer, which renewProducer replaces.
	producerMu sync.RWMutex
	// fetchClient carries the consumers' fetches on connections of their own: a fetch
	// long-polls for up to fetchWait, and on a connection shared with the producer (one
	// request in flight, for the idempotent producer's order) every Produce would wait
	// behind it.
	fetchClient sarama.Client
	// sc is the sarama configuration every client is made with.
	sc *sarama.Config
	// metaClient asks for topic IDs (see topicID) on a connection of its own.
	metaClient sarama.Client
	version    sarama.KafkaVersion
	// idLock (capacity 1) is held while a topic-ID request runs; ids is the last answer and
	// identified every topic whose ID was asked for (the topics this process reads), which
	// each request asks about (guarded by idLock).
	idLock     chan struct{}
	ids        topicIDs
	identified map[string]bool
	// extra are the consumers of partitions the shared consumer already reads (see
	// extraConsumer), each on a client (connection) of its own, closed with the clients.
	extraMu sync.Mutex
	extra   []extraReader

	// closing is cancelled by Close; running counts the calls Close waits for.
	closing context.Context
	close   context.CancelFunc
	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup

	createMu sync.Mutex // serializes creating and checking topics
	topicMu  sync.Mutex
	topics   map[string]int32 // topics known to exist with the configured partition count
	// used are every topic this process ensured: the ones Ready checks and recreates.
	used map[string]bool
	// recreating are the topics a consumer found missing, being created again.
	recreating map[string]bool

	// endsMu guards the shared end-offset requests: endsBusy while one runs, endsNext the
	// one gathering callers for after it.
	endsMu   sync.Mutex
	endsBusy bool
	endsNext *endsBatch

	readyMu  sync.Mutex
	readyRun chan struct{} // closed when the readiness check in flight ends
	readyErr error

	// stalls are the partitions stopped because a consumer's offset is past their end.
	stalls *stalls
}

// NewKafka connects to the brokers and creates or checks cfg.Topics. While no broker
// answers it retries with backoff, logging, until ctx ends; a topic with another partition
// count than configured is an error at once.
func NewKafka(ctx context.Context, cfg KafkaConfig) (*Kafka, error) {
	sc, err := saramaConfig(&cfg)
	if err != nil {
		return nil, err
	}
	k := &Kafka{cfg: cfg, log: cfg.Logger, topics: map[string]int32{}, used: map[string]bool{}, recreating: map[string]bool{},
		version: sc.Version, sc: sc, idLock: make(chan struct{}, 1), identified: map[string]bool{}, stalls: newStalls(&cfg.Config)}
	k.closing, k.close = context.WithCancel(context.Background())
	b := newBackoff()
	for {
		err = k.connect(ctx, sc)
		if err == nil {
			err = k.ensureTopics(ctx, cfg.Topics)
		}
		if err == nil || errors.Is(err, ErrPartitionMismatch) {
			break
		}
		k.log.WithError(err).WithField("brokers", cfg.Brokers).Warn("kafka not ready; retrying")
		if werr := b.wait(ctx); werr != nil {
			err = fmt.Errorf("connect to kafka: %w (last error: %v)", werr, err)
			break
		}
	}
	if err != nil {
		k.close()
		k.closeClients()
		return nil, err
	}
	return k, nil
}

// fetchWait is how long the brokers hold a consumer's fetch when none of its partitions has
// a record to deliver: a fetch is answered as soon as one has, so it bounds only how often an
// idle consumer asks, which every process with a consumer pays per second whatever its
// traffic (docs/benchmarks.md, issue 17: a roomserver shard's fixed cost). New partitions
// join a consumer's fetches, and closed ones leave them, when the fetch in flight ends.
const fetchWait = time.Second

func saramaConfig(cfg *KafkaConfig) (*sarama.Config, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafka: no brokers configured")
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "dendrite"
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 1 << 20
	}
	if cfg.ReplicationFactor <= 0 {
		cfg.ReplicationFactor = 1
	}
	if cfg.Version == "" {
		cfg.Version = "3.6.0"
	}
	if cfg.Retention == 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.NewEntry(logrus.New())
	}
	version, err := sarama.ParseKafkaVersion(cfg.Version)
	if err != nil {
		return nil, fmt.Errorf("kafka version: %w", err)
	}
	sc := sarama.NewConfig()
	sc.ClientID = cfg.ClientID
	sc.Version = version
	sc.Net.DialTimeout = 5 * time.Second
	sc.Net.MaxOpenRequests = 1 // the idempotent producer's ordering needs it
	sc.Metadata.Full = false   // only the topics this process uses
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Metadata.Retry.Max = 2
	sc.Metadata.Retry.Backoff = 100 * time.Millisecond
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Retry.Max = 10
	sc.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		return min(50*time.Millisecond<<min(retries, 6), 2*time.Second)
	}
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.MaxMessageBytes = cfg.MaxMessageBytes
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	sc.Consumer.Return.Errors = true
	sc.Consumer.MaxWaitTime = fetchWait
	sc.MetricRegistry = cfg.Metrics.saramaRegistry()
	sc.Consumer.Retry.BackoffFunc = func(retries int) time.Duration {
		return min(100*time.Millisecond<<min(retries, 6), 5*time.Second)
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	return sc, nil
}

// connect makes the sarama clients; sarama's calls ignore ctx, so a connection attempt
// outliving ctx is abandoned and closed when it ends.
func (k *Kafka) connect(ctx context.Context, sc *sarama.Config) error {
	type result struct {
		client sarama.Client
		err    error
	}
	done := make(chan result, 1)
	go func() {
		c, err := sarama.NewClient(k.cfg.Brokers, sc)
		if err == nil {
			if err = c.RefreshMetadata(); err != nil {
				_ = c.Close() // the client never served anything
			}
		}
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() {
			if r := <-done; r.err == nil {
				_ = r.client.Close() // abandoned attempt
			}
		}()
		return ctx.Err()
	}
	if r.err != nil {
		return r.err
	}
	k.client = r.client
	var err error
	if k.admin, err = sarama.NewClusterAdminFromClient(k.client); err == nil {
		if k.producer, err = sarama.NewSyncProducerFromClient(k.client); err == nil {
			if k.fetchClient, err = sarama.NewClient(k.cfg.Brokers, sc); err == nil {
				if k.consumer, err = sarama.NewConsumerFromClient(k.fetchClient); err == nil {
					k.metaClient, err = sarama.NewClient(k.cfg.Brokers, sc)
				}
			}
		}
	}
	if err != nil {
		k.closeClients()
		return err
	}
	return nil
}

func (k *Kafka) closeClients() {
	// Errors closing are not actionable: the connections are gone either way.
	if k.consumer != nil {
		_ = k.consumer.Close()
	}
	k.extraMu.Lock()
	for _, x := range k.extra {
		_ = x.consumer.Close()
		_ = x.client.Close()
	}
	k.extra = nil
	k.extraMu.Unlock()
	if k.producer != nil {
		_ = k.producer.Close()
	}
	if k.client != nil && !k.client.Closed() {
		_ = k.client.Close() // also what the admin would close
	}
	if k.fetchClient != nil && !k.fetchClient.Closed() {
		_ = k.fetchClient.Close()
	}
	if k.metaClient != nil && !k.metaClient.Closed() {
		_ = k.metaClient.Close()
	}
	k.consumer, k.producer, k.admin, k.client, k.fetchClient, k.metaClient = nil, nil, nil, nil, nil, nil
}

// enter registers a call that Close waits for; false after Close.
func (k *Kafka) enter() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return false
	}
	k.running.Add(1)
	return true
}

// Partitions implements Log.
func (k *Kafka) Partitions(topic string) int32 {
	return k.cfg.partitions(topic)
}

func (k *Kafka) ensureTopics(ctx context.Context, topics []string) error {
	for _, t := range topics {
		if _, err := k.ensureTopic(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// ensureTopic creates topic with the configured partition count, or checks an existing
// one's, and returns the count.
func (k *Kafka) ensureTopic(ctx context.Context, topic string) (int32, error) {
	if n, ok := k.knownTopic(topic); ok {
		return n, nil
	}
	k.createMu.Lock()
	defer k.createMu.Unlock()
	if n, ok := k.knownTopic(topic); ok {
		return n, nil
	}
	n := k.cfg.partitions(topic)
	retention := int64(-1)
	if k.cfg.Retention > 0 {
		retention = k.cfg.Retention.Milliseconds()
	}
	maxBytes := strconv.Itoa(k.cfg.MaxMessageBytes)
	retentionMS := strconv.FormatInt(retention, 10)
	err := k.admin.CreateTopic(topic, &sarama.TopicDetail{
		NumPartitions:     n,
		ReplicationFactor: k.cfg.ReplicationFactor,
		ConfigEntries:     map[string]*string{"max.message.bytes": &maxBytes, "retention.ms": &retentionMS},
	}, false)
	created := err == nil
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return 0, fmt.Errorf("create topic %s: %w", topic, err)
	}
	// A created topic's metadata can lag behind the creation: poll until it shows.
	b := newBackoff()
	for {
		err = k.client.RefreshMetadata(topic)
		var parts []int32
		if err == nil {
			parts, err = k.client.Partitions(topic)
		}
		if err == nil && len(parts) > 0 {
			if int32(len(parts)) != n {
				return 0, fmt.Errorf("topic %s has %d partitions, configured %d: %w", topic, len(parts), n, ErrPartitionMismatch)
			}
			break
		}
		if !created {
			return 0, fmt.Errorf("topic %s metadata: %w", topic, err)
		}
		if werr := b.wait(ctx); werr != nil {
			return 0, fmt.Errorf("topic %s metadata: %w", topic, werr)
		}
	}
	if created {
		k.log.WithFields(logrus.Fields{"topic": topic, "partitions": n}).Info("kafka topic created")
	}
	k.topicMu.Lock()
	k.topics[topic] = n
	k.used[topic] = true
	k.topicMu.Unlock()
	return n, nil
}

// isUnknownTopic reports whether err is the brokers saying a topic does not exist.
func isUnknownTopic(err error) bool {
	return errors.Is(err, sarama.ErrUnknownTopicOrPartition)
}

// forget marks topics as possibly missing (the brokers said they are unknown: deleted, or
// a broker restarted without its data): the next ensureTopic creates or checks them again.
func (k *Kafka) forget(topics ...string) {
	k.topicMu.Lock()
	defer k.topicMu.Unlock()
	for _, t := range topics {
		delete(k.topics, t)
	}
}

// recreate forgets topic and creates it again in the background (one attempt at a time
// per topic): a consumer found it missing, and sarama's partition consumer waits for it
// without creating it.
func (k *Kafka) recreate(topic string) {
	k.forget(topic)
	k.topicMu.Lock()
	busy := k.recreating[topic]
	k.recreating[topic] = true
	k.topicMu.Unlock()
	if busy || !k.enter() {
		return
	}
	go func() {
		defer k.running.Done()
		ctx, cancel := context.WithTimeout(k.closing, time.Minute)
		defer cancel()
		if _, err := k.ensureTopic(ctx, topic); err != nil {
			k.log.WithError(err).WithField("topic", topic).Warn("recreating a missing kafka topic failed")
		}
		k.topicMu.Lock()
		delete(k.recreating, topic)
		k.topicMu.Unlock()
	}()
}

func (k *Kafka) knownTopic(topic string) (int32, bool) {
	k.topicMu.Lock()
	defer k.topicMu.Unlock()
	n, ok := k.topics[topic]
	return n, ok
}

// Produce implements Log. Once the records are handed to the producer it waits for the
// brokers' answer even if ctx ends, so a stored record is never reported lost. On error
// some records may be stored anyway (for example those for another partition): callers
// retry, and consumers are idempotent.
func (k *Kafka) Produce(ctx context.Context, topic string, msgs ...Message) ([]Position, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	if !k.enter() {
		return nil, ErrClosed
	}
	defer k.running.Done()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	n, err := k.ensureTopic(ctx, topic)
	if err != nil {
		return nil, err
	}
	pms := make([]*sarama.ProducerMessage, len(msgs))
	for i, m := range msgs {
		pm := &sarama.ProducerMessage{Topic: topic, Partition: PartitionFor(m.Key, n)}
		if m.Key != nil {
			pm.Key = sarama.ByteEncoder(m.Key)
		}
		if m.Value != nil {
			pm.Value = sarama.ByteEncoder(m.Value)
		}
		// Refuse the whole call before sending anything (version 2 is the record batch
		// format that Kafka ≥ 0.11 uses: the size sarama checks).
		if size := pm.ByteSize(2); size > k.cfg.MaxMessageBytes {
			return nil, fmt.Errorf("produce to %s: record %d is %d bytes, limit %d: %w", topic, i, size, k.cfg.MaxMessageBytes, ErrMessageTooLarge)
		}
		pms[i] = pm
	}
	producer := k.currentProducer()
	err = producer.SendMessages(pms)
	if isUnknownTopic(producedErr(err)) {
		// The topic is gone (deleted, or the brokers restarted without their data):
		// create it again and send once more. Nothing of this call was stored.
		k.forget(topic)
		if _, err = k.ensureTopic(ctx, topic); err == nil {
			err = producer.SendMessages(pms)
		}
	}
	if isLostProducerState(producedErr(err)) {
		// The idempotent producer's sequence numbers belong to partitions that are gone: a
		// recreated partition refuses them. A new producer (a new producer ID) starts again.
		producer, err = k.renewProducer(producer)
		if err == nil {
			err = producer.SendMessages(pms)
		}
	}
	k.cfg.Metrics.produced(topic, time.Since(start))
	if err != nil {
		return nil, produceError(topic, err)
	}
	pos := make([]Position, len(pms))
	for i, pm := range pms {
		pos[i] = Position{Partition: pm.Partition, Offset: pm.Offset}
	}
	return pos, nil
}

// isLostProducerState reports whether the brokers refused the idempotent producer's
// sequence numbers because they no longer know its state for the partition.
func isLostProducerState(err error) bool {
	return errors.Is(err, sarama.ErrOutOfOrderSequenceNumber) || errors.Is(err, sarama.ErrUnknownProducerID)
}

// currentProducer is the producer Produce sends with.
func (k *Kafka) currentProducer() sarama.SyncProducer {
	k.producerMu.RLock()
	defer k.producerMu.RUnlock()
	return k.producer
}

// renewProducer replaces failed, unless another call replaced it already, with a new
// idempotent producer on the same connection, and returns the current one. The old one is
// closed once the calls sending with it return.
func (k *Kafka) renewProducer(failed sarama.SyncProducer) (sarama.SyncProducer, error) {
	k.producerMu.Lock()
	defer k.producerMu.Unlock()
	if k.producer != failed {
		return k.producer, nil
	}
	p, err := sarama.NewSyncProducerFromClient(k.client)
	if err != nil {
		return nil, fmt.Errorf("new kafka producer: %w", err)
	}
	k.producer = p
	k.log.Warn("kafka producer state lost (partition recreated); producing with a new producer id")
	k.running.Add(1)
	go func() {
		defer k.running.Done()
		_ = failed.Close() // its batches failed; closing only frees it
	}()
	return p, nil
}

// producedErr is the cause of a SendMessages error: the first record's error.
func producedErr(err error) error {
	var perrs sarama.ProducerErrors
	if errors.As(err, &perrs) && len(perrs) > 0 {
		return perrs[0].Err
	}
	return err
}

func produceError(topic string, err error) error {
	var perrs sarama.ProducerErrors
	if errors.As(err, &perrs) && len(perrs) > 0 {
		err = perrs[0].Err
		if errors.Is(err, sarama.ErrMessageSizeTooLarge) {
			return fmt.Errorf("produce to %s: %w: %w", topic, ErrMessageTooLarge, err)
		}
		return fmt.Errorf("produce to %s (%d of the records failed): %w", topic, len(perrs), err)
	}
	return fmt.Errorf("produce to %s: %w", topic, err)
}

// EndOffsets implements Log.
func (k *Kafka) EndOffsets(ctx context.Context, topic string) ([]int64, error) {
	ends, err := k.EndOffsetsOf(ctx, []string{topic})
	if err != nil {
		return nil, err
	}
	return ends[0], nil
}

// endsBatch is one ListOffsets round trip shared by the EndOffsetsOf calls that arrived
// before it started.
type endsBatch struct {
	topics map[string]bool
	done   chan struct{}
	ends   map[string][]int64
	err    error
}

// EndOffsetsOf implements Log with one ListOffsets request per partition leader for all
// topics. Concurrent calls share requests: a call joins the next request to start (never
// one already in flight, which could predate the call), so every answer is at least as
// new as the call. Readers call it on every request, often many at once.
func (k *Kafka) EndOffsetsOf(ctx context.Context, topics []string) ([][]int64, error) {
	if !k.enter() {
		return nil, ErrClosed
	}
	defer k.running.Done()
	for _, t := range topics {
		if _, err := k.ensureTopic(ctx, t); err != nil {
			return nil, err
		}
	}
	k.endsMu.Lock()
	b := k.endsNext
	if b == nil {
		b = &endsBatch{topics: map[string]bool{}, done: make(chan struct{})}
		k.endsNext = b
	}
	for _, t := range topics {
		b.topics[t] = true
	}
	if !k.endsBusy {
		k.endsBusy, k.endsNext = true, nil
		k.running.Add(1)
		go k.runEnds(b)
	}
	k.endsMu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if b.err != nil {
		if isUnknownTopic(b.err) {
			k.forget(topics...) // the next call creates them again
		}
		return nil, b.err
	}
	out := make([][]int64, len(topics))
	for i, t := range topics {
		out[i] = b.ends[t]
	}
	return out, nil
}

// runEnds answers b, then every batch that gathered while it ran.
func (k *Kafka) runEnds(b *endsBatch) {
	defer k.running.Done()
	for b != nil {
		b.ends, b.err = k.listEnds(b.topics)
		close(b.done)
		k.endsMu.Lock()
		b, k.endsNext = k.endsNext, nil
		k.endsBusy = b != nil
		k.endsMu.Unlock()
	}
}

// listEnds asks the partition leaders for the end offsets of topics.
func (k *Kafka) listEnds(topics map[string]bool) (map[string][]int64, error) {
	requests := map[*sarama.Broker]*sarama.OffsetRequest{}
	ends := make(map[string][]int64, len(topics))
	for topic := range topics {
		n := k.cfg.partitions(topic)
		ends[topic] = make([]int64, n)
		for p := int32(0); p < n; p++ {
			leader, err := k.client.Leader(topic, p)
			if err != nil {
				return nil, fmt.Errorf("leader of %s/%d: %w", topic, p, err)
			}
			if requests[leader] == nil {
				requests[leader] = &sarama.OffsetRequest{Version: 1}
			}
			requests[leader].AddBlock(topic, p, sarama.OffsetNewest, 1)
		}
	}
	for broker, req := range requests {
		res, err := broker.GetAvailableOffsets(req)
		if err != nil {
			return nil, fmt.Errorf("end offsets: %w", err)
		}
		for topic, blocks := range res.Blocks {
			for p := range blocks {
				block := res.GetBlock(topic, p)
				if block.Err != sarama.ErrNoError {
					return nil, fmt.Errorf("end offset of %s/%d: %w", topic, p, block.Err)
				}
				if p >= 0 && int(p) < len(ends[topic]) {
					ends[topic][p] = block.Offset
				}
			}
		}
	}
	return ends, nil
}

func (k *Kafka) recovering(topic string, partition int32) func() {
	return k.stalls.recovering(topic, partition)
}

func (k *Kafka) retrying(topic string, partition int32) func() {
	return k.stalls.retrying(topic, partition)
}

// Ready reports whether the brokers answer a metadata request for every topic this process
// uses, creating again those they do not know, and no consumer is stopped past the end of
// its partition (ErrOffsetPastEnd), recovering under a Guard (ErrRecovering) or retrying a
// record (ErrStuck). Concurrent
// calls share one request; a call returns early with ctx's error when ctx ends first.
func (k *Kafka) Ready(ctx context.Context) error {
	if !k.enter() {
		return ErrClosed
	}
	defer k.running.Done()
	if err := k.stalls.err(); err != nil {
		return err
	}
	k.readyMu.Lock()
	run := k.readyRun
	if run == nil {
		run = make(chan struct{})
		k.readyRun = run
		k.topicMu.Lock()
		topics := make([]string, 0, len(k.used))
		for t := range k.used {
			topics = append(topics, t)
		}
		k.topicMu.Unlock()
		k.running.Add(1)
		go func() {
			defer k.running.Done()
			err := k.client.RefreshMetadata(topics...)
			if isUnknownTopic(err) {
				// Topics are gone: create them again, so that producers and consumers
				// recover without a restart.
				k.forget(topics...)
				ctx, cancel := context.WithTimeout(k.closing, 30*time.Second)
				err = k.ensureTopics(ctx, topics)
				cancel()
			}
			k.readyMu.Lock()
			k.readyErr, k.readyRun = err, nil
			k.readyMu.Unlock()
			close(run)
		}()
	}
	k.readyMu.Unlock()
	select {
	case <-run:
	case <-ctx.Done():
		return ctx.Err()
	}
	k.readyMu.Lock()
	defer k.readyMu.Unlock()
	if k.readyErr != nil {
		return fmt.Errorf("kafka brokers: %w", k.readyErr)
	}
	return nil
}

// Close ends every Consume (with ErrClosed), waits for calls in flight and closes the
// connections. Produce calls in flight finish first.
func (k *Kafka) Close() error {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return nil
	}
	k.closed = true
	k.mu.Unlock()
	k.close()
	k.running.Wait()
	k.closeClients()
	return nil
}

// backoff doubles from its first delay (100ms by default) to 5s.
type backoff struct{ first, d time.Duration }

func newBackoff() *backoff { return newBackoffFrom(0) }

// newBackoffFrom is a backoff whose first delay is first (100ms when not above 0).
func newBackoffFrom(first time.Duration) *backoff {
	if first <= 0 {
		first = 100 * time.Millisecond
	}
	return &backoff{first: first, d: first}
}

func (b *backoff) reset() { b.d = b.first }

// wait sleeps for the current delay, then doubles it; it returns ctx.Err() if ctx ends first.
func (b *backoff) wait(ctx context.Context) error {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(b.d*2, 5*time.Second)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
