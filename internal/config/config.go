// Package config is Dendrite's configuration: one YAML file with a global section and a
// section per component, a default for every key, environment overrides
// (DENDRITE_<YAML_PATH_UPPER>) and a Verify that reports every problem with its YAML path.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/outbound"
)

// Version is the config format this code reads.
const Version = 1

// Dendrite is the whole configuration.
type Dendrite struct {
	Version    int        `yaml:"version"`
	Global     Global     `yaml:"global"`
	ClientAPI  ClientAPI  `yaml:"client_api"`
	RoomServer RoomServer `yaml:"room_server"`
	SyncAPI    SyncAPI    `yaml:"sync_api"`
	UserAPI    UserAPI    `yaml:"user_api"`
	// EDUServer, ReceiptServer and PresenceServer run the ephemeral data: typing and
	// send-to-device, receipts, presence.
	EDUServer      EDUServer      `yaml:"edu_server"`
	ReceiptServer  ReceiptServer  `yaml:"receipt_server"`
	PresenceServer PresenceServer `yaml:"presence_server"`
	// PushServer is the push_server section: pushers and push gateways.
	PushServer PushServer `yaml:"push_server"`
	// FederationAPI is the federation_api section (federationapi.go).
	FederationAPI FederationAPI `yaml:"federation_api"`
	// FederationSender is the federation_sender section (federationsender.go).
	FederationSender FederationSender `yaml:"federation_sender"`
	// UnknownKeys are the YAML paths of the keys in the loaded file that name no setting;
	// start-up logs each as a warning (internal/setup).
	UnknownKeys []string `yaml:"-"`
	// MediaAPI is the media_api section (mediaapi.go).
	MediaAPI MediaAPI `yaml:"media_api"`
	// AppServiceAPI is the app_service_api section (appservice.go).
	AppServiceAPI AppServiceAPI `yaml:"app_service_api"`
	// SearchAPI is the search_api section (searchapi.go).
	SearchAPI SearchAPI `yaml:"search_api"`
}

// Global holds settings shared by every component.
type Global struct {
	// ServerName is the Matrix server name.
	ServerName string `yaml:"server_name"`
	// DataDir holds the signing key, SQLite databases and the embedded log by default.
	DataDir string `yaml:"data_dir"`
	// PrivateKeyPath is the ed25519 signing key (default <data_dir>/matrix_key.pem).
	PrivateKeyPath string `yaml:"private_key"`
	// HTTPBindAddress is where the client API is served over plain HTTP.
	HTTPBindAddress string `yaml:"http_bind_address"`
	// DenyNetworks are the CIDR networks that outbound federation (and later remote media,
	// URL preview and push gateway) connections must not reach, checked on the resolved
	// address of every connection, redirects included (see internal/outbound). When the key
	// is absent the default applies (outbound.DefaultDenyNetworks: loopback, private,
	// link-local, unique-local, CGNAT, multicast); an explicit empty list denies nothing,
	// as test harnesses whose servers all live on loopback set it.
	DenyNetworks []string `yaml:"deny_networks"`
	// Database, when its connection string is set, is used by every component without its own.
	Database DatabaseOptions `yaml:"database"`
	Log      LogOptions      `yaml:"log"`
	Logging  LoggingOptions  `yaml:"logging"`
	Metrics  MetricsOptions  `yaml:"metrics"`
	Cache    CacheOptions    `yaml:"cache"`
	// MemoryLimit is the Go runtime's soft memory limit in bytes (as GOMEMLIMIT sets it):
	// near it the garbage collector works harder to stay under it. 0 leaves the runtime's
	// default, or GOMEMLIMIT from the environment. It bounds the heap, not the process's
	// whole RSS; see docs/deploy.md for its measured effect.
	MemoryLimit int64 `yaml:"memory_limit"`
}

// CacheOptions bounds the in-memory caches.
type CacheOptions struct {
	// MaxBytes is the estimated bytes the caches of one process may hold together (the
	// monolith is one process). Each component takes fixed shares of it; docs/deploy.md
	// lists them. Each cache's size, hits and evictions are the dendrite_cache_* metrics.
	MaxBytes int64 `yaml:"max_bytes"`
	// SQLiteMaxBytes is a soft limit on SQLite's memory in one process, every connection to
	// every SQLite database together (page caches, prepared statements, parsed schemas): over
	// it, SQLite reuses its least recently used cached pages instead of allocating more.
	// 0: no limit (each connection's cache then grows to SQLite's 2 MB). Reported as
	// dendrite_sqlite_memory_bytes.
	SQLiteMaxBytes int64 `yaml:"sqlite_max_bytes"`
}

// DatabaseOptions names a database.
type DatabaseOptions struct {
	// ConnectionString is "postgres://..." or "file:PATH" (SQLite); empty means the default.
	ConnectionString string `yaml:"connection_string"`
	// MaxOpenConns bounds each component's connection pool (0: 40 on PostgreSQL, 8 on
	// SQLite). Every component has its own pool: a monolith on one PostgreSQL server may
	// open up to this many times the number of components.
	MaxOpenConns int `yaml:"max_open_conns"`
}

// LogOptions configures the event log.
type LogOptions struct {
	// Kind is "embedded" (SQL-backed, in process: the monolith) or "kafka" (the polylith).
	Kind string `yaml:"kind"`
	// TopicPrefix is prepended to every topic name.
	TopicPrefix string `yaml:"topic_prefix"`
	// Partitions is the partition count of every topic.
	Partitions int32 `yaml:"partitions"`
	// EmbeddedDatabase holds the embedded log (default <data_dir>/eventlog.db).
	EmbeddedDatabase DatabaseOptions `yaml:"embedded_database"`
	// Retention is how long Kafka keeps records: the topics' retention.ms. Kafka deletes
	// older records whether consumed or not.
	Retention Duration `yaml:"retention"`
	// ConsumedRetention is how long the embedded log keeps a record that every consumer of
	// its partition has processed; it never deletes one a consumer still needs. Records are
	// trimmed every quarter of it (from a second to a minute) and the space is given back
	// to the file system (SQLite's incremental vacuum).
	ConsumedRetention Duration     `yaml:"consumed_retention"`
	Kafka             KafkaOptions `yaml:"kafka"`
}

// KafkaOptions configures the Kafka log (global.log.kind: kafka).
type KafkaOptions struct {
	// Brokers are the bootstrap addresses, host:port.
	Brokers []string `yaml:"brokers"`
	// MaxMessageBytes bounds every record and is each topic's max.message.bytes.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// ReplicationFactor of the topics Dendrite creates.
	ReplicationFactor int `yaml:"replication_factor"`
}

// InternalAPI is where a component of the polylith serves its internal HTTP API, health
// and metrics (Listen), and where its peers reach it (Connect). The monolith ignores both.
type InternalAPI struct {
	Listen  string `yaml:"listen"`
	Connect string `yaml:"connect"`
}

// LoggingOptions configures the process log.
type LoggingOptions struct {
	// Level is a logrus level: debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is "text" or "json".
	Format string `yaml:"format"`
}

// MetricsOptions configures Prometheus metrics on /metrics (and the Go profiler on
// /debug/pprof/), which are never served on the public client or federation listeners.
type MetricsOptions struct {
	// Enabled serves /metrics: on each polylith process's internal_api.listen, and on
	// Listen in the monolith. When off, /metrics answers 404 everywhere.
	Enabled bool `yaml:"enabled"`
	// Listen is the monolith's dedicated listener for /metrics and /debug/pprof/ (for
	// example 127.0.0.1:9092); empty: the monolith serves neither. Bind it to a loopback or
	// internal address only. The polylith ignores it.
	Listen string `yaml:"listen"`
}

// ClientAPI configures clientapi.
type ClientAPI struct {
	// RegistrationDisabled closes open registration (m.login.dummy, no captcha).
	RegistrationDisabled bool `yaml:"registration_disabled"`
	// RegistrationSharedSecret enables /_synapse/admin/v1/register when set.
	RegistrationSharedSecret string `yaml:"registration_shared_secret"`
	// GuestsDisabled refuses guest registration (kind=guest) with 403 M_FORBIDDEN; false
	// lets anyone register a guest account, limited to the endpoints of the spec's guest
	// access module and to rooms whose m.room.guest_access is can_join.
	GuestsDisabled bool         `yaml:"guests_disabled"`
	RateLimiting   RateLimiting `yaml:"rate_limiting"`
	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// Listen is where the polylith's clientapi process serves the client API.
	Listen      string      `yaml:"listen"`
	InternalAPI InternalAPI `yaml:"internal_api"`
}

// RateLimiting configures per-user and per-IP token buckets.
type RateLimiting struct {
	Enabled       bool     `yaml:"enabled"`
	PerSecond     float64  `yaml:"per_second"`
	Burst         int      `yaml:"burst"`
	ExemptUserIDs []string `yaml:"exempt_user_ids"`
}

// RoomServer configures the roomserver.
type RoomServer struct {
	Database DatabaseOptions `yaml:"database"`
	// Shards is how many roomserver shards split the input partitions.
	Shards int `yaml:"shards"`
	// InputWaitTimeout bounds how long a writer (clientapi, federationapi) waits for the
	// owning shard's verdict on an event it produced (read-your-writes, DESIGN.md 5), in both
	// deployments. When it expires the client gets 504 M_UNKNOWN; the event stays in the log
	// and is processed, and a client retrying with the same transaction ID gets the same event.
	InputWaitTimeout Duration `yaml:"input_wait_timeout"`
	// OutputReplayWindow is how long the roomserver keeps each OutputRoomEvent record after
	// producing it, so that a reader whose log was reset or truncated can fetch what it
	// missed (QueryOutputRecords). A negative value keeps them forever.
	OutputReplayWindow Duration `yaml:"output_replay_window"`
	// InternalAPI.Connect may hold "{shard}", replaced by the shard's index
	// (http://roomserver-{shard}.roomserver:7770 for a Kubernetes StatefulSet).
	InternalAPI InternalAPI `yaml:"internal_api"`
	// ShardConnect, when set, lists every shard's URL in shard order instead.
	ShardConnect []string `yaml:"shard_connect"`
}

// SyncAPI configures the sync API.
type SyncAPI struct {
	Database DatabaseOptions `yaml:"database"`
	// Listen is where the polylith's syncapi process serves its client endpoints.
	Listen      string      `yaml:"listen"`
	InternalAPI InternalAPI `yaml:"internal_api"`
}

// UserAPI configures accounts and devices.
type UserAPI struct {
	Database DatabaseOptions `yaml:"database"`
	// BCryptCost is the password hashing cost.
	BCryptCost int `yaml:"bcrypt_cost"`
	// OutputReplayWindow is how long the userapi keeps each OutputClientData record after
	// producing it, so that a reader whose log was reset or truncated can fetch what it
	// missed (QueryOutputRecords). A negative value keeps them forever.
	OutputReplayWindow Duration    `yaml:"output_replay_window"`
	InternalAPI        InternalAPI `yaml:"internal_api"`
}

// EDUServer configures the eduserver (typing and send-to-device).
type EDUServer struct {
	Database DatabaseOptions `yaml:"database"`
	// MaxTypingTimeout caps the timeout a client asks for with PUT /typing.
	MaxTypingTimeout Duration `yaml:"max_typing_timeout"`
	// InputWaitTimeout bounds how long a writer (clientapi, federationapi) waits for the
	// eduserver to take a send-to-device request it produced, before it acknowledges the
	// request. When it expires the client gets 504 M_UNKNOWN; the request stays in the log
	// and is taken, and a client retrying with the same transaction ID sends nothing twice.
	InputWaitTimeout Duration `yaml:"input_wait_timeout"`
	// OutputReplayWindow is how long the eduserver keeps each OutputSendToDeviceEvent
	// record after producing it, so that a reader whose log was reset or truncated can
	// fetch what it missed (QueryOutputRecords). A negative value keeps them forever.
	OutputReplayWindow Duration    `yaml:"output_replay_window"`
	InternalAPI        InternalAPI `yaml:"internal_api"`
}

// ReceiptServer configures the receiptserver.
type ReceiptServer struct {
	Database DatabaseOptions `yaml:"database"`
	// InputWaitTimeout bounds how long the clientapi waits for the receiptserver to take a
	// receipt it produced (POST /receipt, POST /read_markers), before it acknowledges the
	// receipt. When it expires the client gets 504 M_UNKNOWN; the receipt stays in the log
	// and is taken, and a client retrying announces nothing twice.
	InputWaitTimeout Duration `yaml:"input_wait_timeout"`
	// OutputReplayWindow is how long the receiptserver keeps each OutputReceiptEvent record
	// after producing it, so that a reader whose log was reset or truncated can fetch what
	// it missed (QueryOutputRecords). A negative value keeps them forever.
	OutputReplayWindow Duration    `yaml:"output_replay_window"`
	InternalAPI        InternalAPI `yaml:"internal_api"`
}

// PushServer configures the pushserver: the push reader, pushers, /notifications and
// delivery to push gateways.
type PushServer struct {
	Database DatabaseOptions `yaml:"database"`
	// Listen is where the polylith's pushserver process serves /notifications and
	// /pushers.
	Listen      string      `yaml:"listen"`
	InternalAPI InternalAPI `yaml:"internal_api"`
	// DisableTLSValidation accepts any certificate from push gateways (logged as a
	// warning). Only for tests and local development.
	DisableTLSValidation bool `yaml:"disable_tls_validation"`
	// NotificationRetention is how long the push reader keeps a notification that does
	// not highlight (for /notifications) and HighlightRetention one that does; older ones
	// are deleted by a background job. Unread counts do not depend on them. Zero keeps
	// them forever (a zero NotificationRetention keeps highlights too).
	NotificationRetention Duration `yaml:"notification_retention"`
	HighlightRetention    Duration `yaml:"highlight_retention"`
	// MaxDeliveries is how many pushers the deliverer sends to at once, over every
	// gateway; MaxDeliveriesPerGateway how many of them may share one gateway (scheme,
	// host and port of the pusher's URL), so a slow or failing gateway holds at most
	// that many of the MaxDeliveries and the others' pushes go on.
	MaxDeliveries           int `yaml:"max_deliveries"`
	MaxDeliveriesPerGateway int `yaml:"max_deliveries_per_gateway"`
	// OutputReplayWindow is how long the pushserver keeps each OutputNotificationData
	// record after producing it, so that a reader (the sync API) whose log was reset or
	// truncated can fetch what it missed (QueryOutputRecords). A negative value keeps them
	// forever. Shorter than the other owners' windows by default: there is a record per
	// notified user and event.
	OutputReplayWindow Duration `yaml:"output_replay_window"`
}

// PresenceServer configures the presenceserver.
type PresenceServer struct {
	Database DatabaseOptions `yaml:"database"`
	// Enabled turns presence on; when off, presence is neither stored nor sent and every
	// user reads as offline.
	Enabled bool `yaml:"enabled"`
	// IdleTimeout turns an online user unavailable after this long without activity.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// OfflineTimeout turns a user offline after this long with no /sync and no activity.
	// It must exceed the longest /sync long-poll clients use.
	OfflineTimeout Duration `yaml:"offline_timeout"`
	// InputWaitTimeout bounds how long the clientapi waits for the presenceserver to take a
	// presence it produced (PUT /presence), before it acknowledges it. When it expires the
	// client gets 504 M_UNKNOWN; the presence stays in the log and is taken, and a client
	// retrying announces nothing twice.
	InputWaitTimeout Duration `yaml:"input_wait_timeout"`
	// OutputReplayWindow is how long the presenceserver keeps each OutputPresenceEvent
	// record after producing it, so that a reader whose log was reset or truncated can
	// fetch what it missed (QueryOutputRecords). A negative value keeps them forever.
	OutputReplayWindow Duration    `yaml:"output_replay_window"`
	InternalAPI        InternalAPI `yaml:"internal_api"`
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses "30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes "30s".
func (d Duration) MarshalYAML() (any, error) {
	return time.Duration(d).String(), nil
}

// Defaults is the configuration with every default filled in.
func Defaults() *Dendrite {
	return &Dendrite{
		Version: Version,
		Global: Global{
			ServerName: "localhost", DataDir: "./data", HTTPBindAddress: ":8008",
			DenyNetworks: slices.Clone(outbound.DefaultDenyNetworks),
			Log: LogOptions{Kind: "embedded", TopicPrefix: "Dendrite", Partitions: 16, Retention: Duration(7 * 24 * time.Hour),
				ConsumedRetention: Duration(time.Minute),
				Kafka:             KafkaOptions{MaxMessageBytes: 1 << 20, ReplicationFactor: 1}},
			Logging: LoggingOptions{Level: "info", Format: "text"},
			Metrics: MetricsOptions{Enabled: true},
			Cache:   CacheOptions{MaxBytes: int64(caching.DefaultBudget), SQLiteMaxBytes: 32 << 20},
		},
		ClientAPI: ClientAPI{
			RegistrationDisabled: true, GuestsDisabled: true, MaxBodyBytes: 10 << 20,
			RateLimiting: RateLimiting{Enabled: true, PerSecond: 100, Burst: 500},
			Listen:       ":8071", InternalAPI: InternalAPI{Listen: ":7771", Connect: "http://clientapi:7771"},
		},
		RoomServer: RoomServer{Shards: 1, InputWaitTimeout: Duration(30 * time.Second), OutputReplayWindow: Duration(7 * 24 * time.Hour),
			InternalAPI: InternalAPI{Listen: ":7770", Connect: "http://roomserver-{shard}:7770"}},
		SyncAPI: SyncAPI{Listen: ":8073", InternalAPI: InternalAPI{Listen: ":7773", Connect: "http://syncapi:7773"}},
		UserAPI: UserAPI{BCryptCost: 10, OutputReplayWindow: Duration(7 * 24 * time.Hour), InternalAPI: InternalAPI{Listen: ":7772", Connect: "http://userapi:7772"}},
		EDUServer: EDUServer{MaxTypingTimeout: Duration(2 * time.Minute), InputWaitTimeout: Duration(30 * time.Second),
			OutputReplayWindow: Duration(7 * 24 * time.Hour), InternalAPI: InternalAPI{Listen: ":7774", Connect: "http://eduserver:7774"}},
		ReceiptServer: ReceiptServer{InputWaitTimeout: Duration(30 * time.Second), OutputReplayWindow: Duration(7 * 24 * time.Hour),
			InternalAPI: InternalAPI{Listen: ":7775", Connect: "http://receiptserver:7775"}},
		PresenceServer: PresenceServer{Enabled: true, IdleTimeout: Duration(5 * time.Minute), OfflineTimeout: Duration(90 * time.Second), InputWaitTimeout: Duration(30 * time.Second),
			OutputReplayWindow: Duration(7 * 24 * time.Hour), InternalAPI: InternalAPI{Listen: ":7776", Connect: "http://presenceserver:7776"}},
		PushServer: PushServer{Listen: ":8075", InternalAPI: InternalAPI{Listen: ":7781", Connect: "http://pushserver:7781"},
			NotificationRetention: Duration(24 * time.Hour), HighlightRetention: Duration(30 * 24 * time.Hour),
			MaxDeliveries: 64, MaxDeliveriesPerGateway: 16, OutputReplayWindow: Duration(24 * time.Hour)},
		FederationAPI:    defaultFederationAPI(),
		FederationSender: defaultFederationSender(),
		MediaAPI:         defaultMediaAPI(),
		AppServiceAPI:    defaultAppServiceAPI(),
		SearchAPI:        defaultSearchAPI(),
	}
}

// Load reads a config file over the defaults, applies environment overrides and verifies it.
func Load(path string) (*Dendrite, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return LoadBytes(b, os.Environ())
}

// LoadBytes is Load on the file's bytes and an environment.
func LoadBytes(b []byte, env []string) (*Dendrite, error) {
	c := Defaults()
	if err := yaml.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	unknown, err := unknownKeys(b)
	if err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	c.UnknownKeys = unknown
	if err := applyEnv(c, env); err != nil {
		return nil, err
	}
	if err := c.Verify(); err != nil {
		return nil, err
	}
	return c, nil
}

// ConfigErrors is every problem found, each "yaml.path: problem".
type ConfigErrors []string

// Error lists the problems.
func (e ConfigErrors) Error() string {
	return "invalid config:\n  " + strings.Join(e, "\n  ")
}

// Verify reports every problem at once.
func (c *Dendrite) Verify() error {
	var errs ConfigErrors
	bad := func(path, problem string) { errs = append(errs, path+": "+problem) }
	if c.Version != Version {
		bad("version", fmt.Sprintf("must be %d", Version))
	}
	if c.Global.ServerName == "" {
		bad("global.server_name", "must not be empty")
	}
	if c.Global.DataDir == "" {
		bad("global.data_dir", "must not be empty")
	}
	if c.Global.DenyNetworks == nil {
		bad("global.deny_networks", "is null: remove the key for the default list, or write [] to deny nothing")
	}
	for i, n := range c.Global.DenyNetworks {
		if _, err := outbound.NewPolicy([]string{n}); err != nil {
			bad(fmt.Sprintf("global.deny_networks[%d]", i), "must be a CIDR network such as 10.0.0.0/8 or fc00::/7")
		}
	}
	switch c.Global.Log.Kind {
	case "embedded":
	case "kafka":
		if len(c.Global.Log.Kafka.Brokers) == 0 {
			bad("global.log.kafka.brokers", "must name at least one broker when global.log.kind is kafka")
		}
	default:
		bad("global.log.kind", "must be embedded or kafka")
	}
	if c.Global.Log.ConsumedRetention <= 0 {
		bad("global.log.consumed_retention", "must be positive")
	}
	if c.Global.Log.Retention <= 0 {
		bad("global.log.retention", "must be positive")
	}
	if c.Global.Log.Kafka.MaxMessageBytes < 65536 {
		bad("global.log.kafka.max_message_bytes", "must be at least 65536")
	}
	if c.Global.Log.Kafka.ReplicationFactor < 1 {
		bad("global.log.kafka.replication_factor", "must be at least 1")
	}
	if n := len(c.RoomServer.ShardConnect); n != 0 && n != c.RoomServer.Shards {
		bad("room_server.shard_connect", "must list one URL per shard (room_server.shards)")
	}
	if c.Global.Cache.MaxBytes < 1<<20 {
		bad("global.cache.max_bytes", "must be at least 1048576 (1 MiB)")
	}
	if c.Global.Cache.SQLiteMaxBytes < 0 {
		bad("global.cache.sqlite_max_bytes", "must not be negative (0: no limit)")
	}
	if c.Global.MemoryLimit < 0 {
		bad("global.memory_limit", "must not be negative (0: no limit)")
	}
	if c.Global.Database.MaxOpenConns < 0 {
		bad("global.database.max_open_conns", "must not be negative")
	}
	if c.Global.Log.Partitions < 1 || c.Global.Log.Partitions > 1024 {
		bad("global.log.partitions", "must be between 1 and 1024")
	}
	if _, err := parseLevel(c.Global.Logging.Level); err != nil {
		bad("global.logging.level", err.Error())
	}
	if f := c.Global.Logging.Format; f != "text" && f != "json" {
		bad("global.logging.format", "must be text or json")
	}
	if rl := c.ClientAPI.RateLimiting; rl.Enabled && (rl.PerSecond <= 0 || rl.Burst < 1) {
		bad("client_api.rate_limiting", "per_second must be positive and burst at least 1")
	}
	if c.ClientAPI.MaxBodyBytes < 65536 {
		bad("client_api.max_body_bytes", "must be at least 65536 (one event)")
	}
	if c.RoomServer.Shards < 1 || int32(c.RoomServer.Shards) > c.Global.Log.Partitions {
		bad("room_server.shards", "must be between 1 and global.log.partitions")
	}
	if c.RoomServer.InputWaitTimeout <= 0 {
		bad("room_server.input_wait_timeout", "must be positive")
	}
	if c.UserAPI.BCryptCost < 4 || c.UserAPI.BCryptCost > 31 {
		bad("user_api.bcrypt_cost", "must be between 4 and 31")
	}
	if c.EDUServer.MaxTypingTimeout <= 0 {
		bad("edu_server.max_typing_timeout", "must be positive")
	}
	if c.EDUServer.InputWaitTimeout <= 0 {
		bad("edu_server.input_wait_timeout", "must be positive")
	}
	if c.ReceiptServer.InputWaitTimeout <= 0 {
		bad("receipt_server.input_wait_timeout", "must be positive")
	}
	if c.PresenceServer.InputWaitTimeout <= 0 {
		bad("presence_server.input_wait_timeout", "must be positive")
	}
	if c.PushServer.NotificationRetention < 0 {
		bad("push_server.notification_retention", "must not be negative")
	}
	if c.PushServer.HighlightRetention != 0 && c.PushServer.HighlightRetention < c.PushServer.NotificationRetention {
		bad("push_server.highlight_retention", "must be 0 (forever) or at least push_server.notification_retention")
	}
	if c.PushServer.MaxDeliveries < 1 {
		bad("push_server.max_deliveries", "must be at least 1")
	}
	if c.PushServer.MaxDeliveriesPerGateway < 1 || c.PushServer.MaxDeliveriesPerGateway > c.PushServer.MaxDeliveries {
		bad("push_server.max_deliveries_per_gateway", "must be between 1 and push_server.max_deliveries")
	}
	if c.PresenceServer.IdleTimeout <= 0 {
		bad("presence_server.idle_timeout", "must be positive")
	}
	if c.PresenceServer.OfflineTimeout < Duration(30*time.Second) {
		bad("presence_server.offline_timeout", "must be at least 30s (a /sync long-poll)")
	}
	c.FederationAPI.verify(bad)
	c.FederationSender.verify(bad)
	c.MediaAPI.verify(bad)
	c.AppServiceAPI.verify(c.Global.ServerName, bad)
	c.SearchAPI.verify(bad)
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// DatabaseFor is a component's effective DSN: its own, else the global one, else a SQLite
// file in the data directory.
func (c *Dendrite) DatabaseFor(component string, own DatabaseOptions) string {
	if own.ConnectionString != "" {
		return own.ConnectionString
	}
	if c.Global.Database.ConnectionString != "" && component != "eventlog" {
		return c.Global.Database.ConnectionString
	}
	return "file:" + filepath.Join(c.Global.DataDir, component+".db")
}

// MaxOpenConnsFor is a component's connection pool bound: its own, else the global one
// (0 for the engine's default).
func (c *Dendrite) MaxOpenConnsFor(own DatabaseOptions) int {
	if own.MaxOpenConns > 0 {
		return own.MaxOpenConns
	}
	return c.Global.Database.MaxOpenConns
}

// OutboundPolicy is global.deny_networks as the policy of the outbound dialer. Verify has
// checked every entry.
func (c *Dendrite) OutboundPolicy() (*outbound.Policy, error) {
	p, err := outbound.NewPolicy(c.Global.DenyNetworks)
	if err != nil {
		return nil, fmt.Errorf("global.deny_networks: %w", err)
	}
	return p, nil
}

// SigningKeyPath is the ed25519 signing key's file: the configured one, else
// matrix_key.pem in the data directory.
func (c *Dendrite) SigningKeyPath() string {
	if c.Global.PrivateKeyPath != "" {
		return c.Global.PrivateKeyPath
	}
	return filepath.Join(c.Global.DataDir, "matrix_key.pem")
}

// Components are the components that run as processes of their own in the polylith, each
// with its config section's internal_api.
var Components = []string{"clientapi", "roomserver", "syncapi", "userapi", "eduserver", "receiptserver", "presenceserver", "federationapi", "federationsender", "mediaapi", "appservice", "pushserver", "searchapi"}

// InternalAPIOf is the internal API section of a component other than the roomserver (whose
// shards each have their own URL; see ShardURL), nil for an unknown name.
func (c *Dendrite) InternalAPIOf(component string) *InternalAPI {
	return map[string]*InternalAPI{
		"clientapi": &c.ClientAPI.InternalAPI, "syncapi": &c.SyncAPI.InternalAPI, "userapi": &c.UserAPI.InternalAPI,
		"eduserver": &c.EDUServer.InternalAPI, "receiptserver": &c.ReceiptServer.InternalAPI, "presenceserver": &c.PresenceServer.InternalAPI,
		"federationapi": &c.FederationAPI.InternalAPI, "federationsender": &c.FederationSender.InternalAPI,
		"mediaapi": &c.MediaAPI.InternalAPI, "appservice": &c.AppServiceAPI.InternalAPI,
		"pushserver": &c.PushServer.InternalAPI,
		"searchapi":  &c.SearchAPI.InternalAPI,
	}[component]
}

// DatabaseOf is the database section of a component, nil for one without a database
// (clientapi) or an unknown name.
func (c *Dendrite) DatabaseOf(component string) *DatabaseOptions {
	return map[string]*DatabaseOptions{
		"roomserver": &c.RoomServer.Database, "syncapi": &c.SyncAPI.Database, "userapi": &c.UserAPI.Database,
		"eduserver": &c.EDUServer.Database, "receiptserver": &c.ReceiptServer.Database, "presenceserver": &c.PresenceServer.Database,
		"federationapi": &c.FederationAPI.Database, "federationsender": &c.FederationSender.Database,
		"mediaapi": &c.MediaAPI.Database, "appservice": &c.AppServiceAPI.Database,
		"pushserver": &c.PushServer.Database,
		"searchapi":  &c.SearchAPI.Database,
	}[component]
}

// ShardURL is where roomserver shard i serves its internal API.
func (r *RoomServer) ShardURL(i int) string {
	if len(r.ShardConnect) > 0 {
		return r.ShardConnect[i]
	}
	return strings.ReplaceAll(r.InternalAPI.Connect, "{shard}", strconv.Itoa(i))
}

// errNoField is returned for an environment override naming no key.
var errNoField = errors.New("no such config key")
