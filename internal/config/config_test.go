package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/matrix-org/dendrite/internal/outbound"
)

func TestSampleIsCommittedAndValid(t *testing.T) {
	committed, err := os.ReadFile("../../dendrite-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(committed, Sample()) {
		t.Fatal("dendrite-config.yaml differs from config.Sample(): regenerate it with `go run ./cmd/dendrite sample-config > dendrite-config.yaml`")
	}
	if _, err := LoadBytes(committed, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBytes(DevConfig(t.TempDir()), nil); err != nil {
		t.Fatal(err)
	}
}

func TestContractKeysAndEnvironment(t *testing.T) {
	c, err := LoadBytes([]byte("global:\n  server_name: example.org\n  data_dir: /tmp/x\nclient_api:\n  registration_disabled: false\n"),
		[]string{"DENDRITE_CLIENT_API_REGISTRATION_SHARED_SECRET=s3", "DENDRITE_ROOM_SERVER_INPUT_WAIT_TIMEOUT=5s",
			"DENDRITE_GLOBAL_LOG_PARTITIONS=8", "DENDRITE_CLIENT_API_RATE_LIMITING_EXEMPT_USER_IDS=@a:b, @c:d", "UNRELATED=1"})
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case c.Global.ServerName != "example.org", c.ClientAPI.RegistrationDisabled, c.ClientAPI.RegistrationSharedSecret != "s3",
		time.Duration(c.RoomServer.InputWaitTimeout) != 5*time.Second, c.Global.Log.Partitions != 8,
		len(c.ClientAPI.RateLimiting.ExemptUserIDs) != 2, c.SigningKeyPath() != "/tmp/x/matrix_key.pem":
		t.Fatalf("unexpected config %+v", c)
	}
	if got := c.DatabaseFor("roomserver", c.RoomServer.Database); got != "file:/tmp/x/roomserver.db" {
		t.Fatalf("DatabaseFor: %s", got)
	}
	c.Global.Database.ConnectionString = "postgres://db"
	if got := c.DatabaseFor("syncapi", c.SyncAPI.Database); got != "postgres://db" {
		t.Fatalf("DatabaseFor with global postgres: %s", got)
	}
	if _, err = LoadBytes(nil, []string{"DENDRITE_CLIENT_API_REGISTRATION_DISABLED=maybe"}); err == nil {
		t.Fatal("a bad boolean override was accepted")
	}
}

func TestVerifyReportsEveryProblem(t *testing.T) {
	_, err := LoadBytes([]byte("global:\n  server_name: \"\"\n  log:\n    partitions: 0\nroom_server:\n  shards: 0\nuser_api:\n  bcrypt_cost: 99\n"+
		"receipt_server:\n  input_wait_timeout: 0s\npresence_server:\n  input_wait_timeout: -1s\n"), nil)
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("want ConfigErrors, got %v", err)
	}
	for _, path := range []string{"global.server_name", "global.log.partitions", "room_server.shards", "user_api.bcrypt_cost",
		"receipt_server.input_wait_timeout", "presence_server.input_wait_timeout"} {
		if !strings.Contains(err.Error(), path+":") {
			t.Errorf("missing error for %s in %v", path, err)
		}
	}
}

func TestKeyIsGeneratedThenReloaded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k", "matrix_key.pem")
	id1, k1, err := LoadOrGenerateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	id2, k2, err := LoadOrGenerateKey(path)
	if err != nil || id1 != id2 || !k1.Equal(k2) || !strings.HasPrefix(string(id1), "ed25519:") {
		t.Fatalf("reloaded key differs: %s %s %v", id1, id2, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Dir(path)); fi.Mode().Perm() != 0o700 {
		t.Fatalf("key directory mode %v", fi.Mode())
	}
	open := filepath.Join(t.TempDir(), "open")
	if err = os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err = os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, _, err = LoadOrGenerateKey(filepath.Join(open, "matrix_key.pem")); err == nil || !strings.Contains(err.Error(), "chmod") {
		t.Fatalf("key written into a world-writable directory: %v", err)
	}
}

func TestPolylithKeys(t *testing.T) {
	_, err := LoadBytes([]byte("global:\n  log:\n    kind: kafka\n"), nil)
	var errs ConfigErrors
	if !errors.As(err, &errs) || !strings.Contains(err.Error(), "global.log.kafka.brokers") {
		t.Fatalf("kafka without brokers: %v", err)
	}
	c, err := LoadBytes([]byte("global:\n  log:\n    kind: kafka\nroom_server:\n  shards: 2\n"),
		[]string{"DENDRITE_GLOBAL_LOG_KAFKA_BROKERS=k1:9092,k2:9092"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Global.Log.Kafka.Brokers) != 2 || c.RoomServer.ShardURL(1) != "http://roomserver-1:7770" {
		t.Fatalf("brokers %v, shard 1 at %s", c.Global.Log.Kafka.Brokers, c.RoomServer.ShardURL(1))
	}
	c.RoomServer.ShardConnect = []string{"http://a", "http://b"}
	if c.RoomServer.ShardURL(1) != "http://b" {
		t.Fatalf("shard_connect ignored: %s", c.RoomServer.ShardURL(1))
	}
	_, err = LoadBytes([]byte("room_server:\n  shards: 2\n  shard_connect: [\"http://a\"]\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "room_server.shard_connect") {
		t.Fatalf("short shard_connect: %v", err)
	}
}

// TestMaxOpenConns: a component's own bound wins over the global one; negative is refused.
func TestMaxOpenConns(t *testing.T) {
	c, err := LoadBytes([]byte("global:\n  database:\n    max_open_conns: 5\nroom_server:\n  database:\n    max_open_conns: 9\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.MaxOpenConnsFor(c.RoomServer.Database); got != 9 {
		t.Fatalf("roomserver bound %d, want its own 9", got)
	}
	if got := c.MaxOpenConnsFor(c.SyncAPI.Database); got != 5 {
		t.Fatalf("syncapi bound %d, want the global 5", got)
	}
	if _, err = LoadBytes([]byte("global:\n  database:\n    max_open_conns: -1\n"), nil); err == nil || !strings.Contains(err.Error(), "global.database.max_open_conns") {
		t.Fatalf("negative bound: %v", err)
	}
}

// TestDatabaseOfEveryComponent: every component but clientapi has a database section, so
// tools that redirect them all (devcluster) miss none.
func TestDatabaseOfEveryComponent(t *testing.T) {
	c := Defaults()
	for _, name := range Components {
		if (c.DatabaseOf(name) == nil) != (name == "clientapi") {
			t.Errorf("DatabaseOf(%q) = %v", name, c.DatabaseOf(name))
		}
	}
}

// TestUnknownKeysReported: keys naming no setting are listed with their YAML paths, nested
// and in lists too, and do not stop the load; the sample config has none.
func TestUnknownKeysReported(t *testing.T) {
	c, err := LoadBytes([]byte(`client_api:
  registration_disabeld: true
  rate_limiting:
    burts: 3
federation_api:
  old_verify_keys:
    - key_id: "ed25519:old"
      public_key: "`+strings.Repeat("A", 43)+`"
      expired_ts: 1
      expird: 2
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"client_api.registration_disabeld", "client_api.rate_limiting.burts", "federation_api.old_verify_keys[0].expird"}
	if strings.Join(c.UnknownKeys, " ") != strings.Join(want, " ") {
		t.Fatalf("unknown keys %v, want %v", c.UnknownKeys, want)
	}
	if !c.ClientAPI.RegistrationDisabled || c.ClientAPI.RateLimiting.Burst != 500 {
		t.Fatalf("a misspelt key changed a setting: %+v", c.ClientAPI)
	}
	for name, b := range map[string][]byte{"sample": Sample(), "development": DevConfig(t.TempDir())} {
		c, err := LoadBytes(b, nil)
		if err != nil || len(c.UnknownKeys) != 0 {
			t.Fatalf("%s config: unknown keys %v, %v", name, c.UnknownKeys, err)
		}
	}
}

// sytestDriverConfig is the config the sytest driver writes (/work/shared/sytest/README.md,
// "What the driver relies on"), as YAML; {as1} and {as2} are its registration files.
const sytestDriverConfig = `version: 1
global:
  server_name: "localhost:8448"
  data_dir: /tmp/sytest-data
  deny_networks: []
  logging:
    level: info
    format: text
client_api:
  registration_disabled: false
  registration_shared_secret: reg_secret
  guests_disabled: false
  rate_limiting:
    enabled: false
user_api:
  bcrypt_cost: 4
app_service_api:
  config_files: [{as1}, {as2}]
federation_api:
  disable_tls_validation: true
  rate_limiting:
    enabled: false
`

// TestSytestDriverConfigLoads: the server starts with the sytest driver's config, every key
// it sets is applied, and the keys this version lacks are only reported.
func TestSytestDriverConfigLoads(t *testing.T) {
	dir := t.TempDir()
	as1, as2 := filepath.Join(dir, "appserv-0.yaml"), filepath.Join(dir, "appserv-1.yaml")
	writeFile(t, as1, sytestRegistration("AS-1", "as-user-1", "A"))
	writeFile(t, as2, sytestRegistration("AS-2", "as-user-2", "B"))
	c, err := LoadBytes([]byte(strings.NewReplacer("{as1}", as1, "{as2}", as2).Replace(sytestDriverConfig)), nil)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case c.Global.ServerName != "localhost:8448", c.ClientAPI.RegistrationDisabled, c.ClientAPI.RegistrationSharedSecret != "reg_secret",
		c.ClientAPI.GuestsDisabled, c.ClientAPI.RateLimiting.Enabled, c.UserAPI.BCryptCost != 4,
		!c.FederationAPI.DisableTLSValidation, c.FederationAPI.RateLimiting.Enabled:
		t.Fatalf("driver settings not applied: %+v", c)
	}
	if c.Global.DenyNetworks == nil || len(c.Global.DenyNetworks) != 0 {
		t.Fatalf("deny_networks %v, want the driver's empty list", c.Global.DenyNetworks)
	}
	if len(c.UnknownKeys) != 0 {
		t.Errorf("unknown driver keys %v", c.UnknownKeys)
	}
	if len(c.AppServiceAPI.Registrations) != 2 || c.AppServiceAPI.Registrations[0].SenderUserID() != "@as-user-1:localhost:8448" {
		t.Fatalf("registrations %+v", c.AppServiceAPI.Registrations)
	}
}

// TestEverySampleKeyIsASetting: each key of the sample config names a setting, and setting
// each leaf to another value changes the loaded config (no key is ignored on the way in).
// internal/archtest's TestEveryConfigFieldIsUsed checks that code reads every setting.
func TestEverySampleKeyIsASetting(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal(Sample(), &doc); err != nil {
		t.Fatal(err)
	}
	leaves := 0
	var walk func(n *yaml.Node, path []string)
	walk = func(n *yaml.Node, path []string) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], append(slices.Clone(path), n.Content[i].Value))
			}
			return
		}
		leaves++
		var b strings.Builder
		for i, p := range path {
			fmt.Fprintf(&b, "%s%s:", strings.Repeat("  ", i), p)
			if i < len(path)-1 {
				b.WriteString("\n")
			}
		}
		changed := changedValue(n)
		c := Defaults()
		err := yaml.Unmarshal([]byte(b.String()+" "+changed+"\n"), c)
		if err != nil && n.Kind == yaml.SequenceNode {
			changed, c = "[{}]", Defaults() // a list of structs
			err = yaml.Unmarshal([]byte(b.String()+" "+changed+"\n"), c)
		}
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(path, "."), err)
		}
		if reflect.DeepEqual(c, Defaults()) {
			t.Errorf("%s: setting it to %s changed nothing", strings.Join(path, "."), changed)
		}
	}
	walk(doc.Content[0], nil)
	if leaves < 50 {
		t.Fatalf("walked only %d keys", leaves)
	}
}

// changedValue is a YAML value of the leaf's kind that differs from it.
func changedValue(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.SequenceNode:
		return `["x"]`
	case n.Tag == "!!bool":
		if n.Value == "true" {
			return "false"
		}
		return "true"
	case n.Tag == "!!int", n.Tag == "!!float":
		return "7"
	default:
		if _, err := time.ParseDuration(n.Value); err == nil {
			return "7s"
		}
		return `"changed"`
	}
}

// TestDenyNetworksAbsentOrEmpty is the test harnesses' contract: an absent
// global.deny_networks is the default list, an explicit [] (in YAML, or an empty
// environment override) denies nothing, a list replaces the default, null and a bad CIDR
// are refused with their path.
func TestDenyNetworksAbsentOrEmpty(t *testing.T) {
	const base = "global:\n  server_name: example.org\n"
	cases := []struct {
		name, yaml string
		env        []string
		want       []string
	}{
		{"absent", base, nil, outbound.DefaultDenyNetworks},
		{"empty", base + "  deny_networks: []\n", nil, []string{}},
		{"list", base + "  deny_networks: [\"203.0.113.0/24\"]\n", nil, []string{"203.0.113.0/24"}},
		{"env empty", base, []string{"DENDRITE_GLOBAL_DENY_NETWORKS="}, []string{}},
		{"env list", base + "  deny_networks: []\n", []string{"DENDRITE_GLOBAL_DENY_NETWORKS=10.0.0.0/8, fc00::/7"}, []string{"10.0.0.0/8", "fc00::/7"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := LoadBytes([]byte(c.yaml), c.env)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Global.DenyNetworks == nil || !slices.Equal(cfg.Global.DenyNetworks, c.want) {
				t.Fatalf("deny_networks %#v, want %#v", cfg.Global.DenyNetworks, c.want)
			}
			p, err := cfg.OutboundPolicy()
			if err != nil {
				t.Fatal(err)
			}
			if loopback := p.Allowed(netip.MustParseAddr("127.0.0.1")); loopback != (len(c.want) != len(outbound.DefaultDenyNetworks)) {
				t.Fatalf("127.0.0.1 allowed: %v", loopback)
			}
		})
	}
	for _, bad := range []string{base + "  deny_networks:\n", base + "  deny_networks: [\"10.0.0.0\", \"fc00::/7\"]\n"} {
		_, err := LoadBytes([]byte(bad), nil)
		if err == nil || !strings.Contains(err.Error(), "global.deny_networks") {
			t.Errorf("%q: %v, want an error naming global.deny_networks", bad, err)
		}
	}
	if Defaults().Global.DenyNetworks == nil || &Defaults().Global.DenyNetworks[0] == &outbound.DefaultDenyNetworks[0] {
		t.Fatal("Defaults shares the package's default list")
	}
}

// TestNotificationRetention reads push_server.notification_retention and
// highlight_retention: a day and thirty days by default, values from YAML, 0 (forever)
// accepted, a negative retention and a highlight retention shorter than the other refused.
func TestNotificationRetention(t *testing.T) {
	const base = "global:\n  server_name: example.org\n"
	cfg, err := LoadBytes([]byte(base), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PushServer.NotificationRetention != Duration(24*time.Hour) || cfg.PushServer.HighlightRetention != Duration(720*time.Hour) {
		t.Fatalf("default retentions %v and %v", cfg.PushServer.NotificationRetention, cfg.PushServer.HighlightRetention)
	}
	cfg, err = LoadBytes([]byte(base+"push_server:\n  notification_retention: 2h\n  highlight_retention: 0s\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PushServer.NotificationRetention != Duration(2*time.Hour) || cfg.PushServer.HighlightRetention != 0 {
		t.Fatalf("retentions %v and %v", cfg.PushServer.NotificationRetention, cfg.PushServer.HighlightRetention)
	}
	for yaml, path := range map[string]string{
		"  notification_retention: -1h\n":                            "push_server.notification_retention:",
		"  notification_retention: 48h\n  highlight_retention: 1h\n": "push_server.highlight_retention:",
	} {
		if _, err := LoadBytes([]byte(base+"push_server:\n"+yaml), nil); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: %v, want an error naming %s", yaml, err, path)
		}
	}
}

// TestPushDeliveryLimits reads push_server.max_deliveries and
// max_deliveries_per_gateway: 64 and 16 by default, values from YAML, and refuses a
// limit below 1 or a per-gateway limit above the overall one.
func TestPushDeliveryLimits(t *testing.T) {
	const base = "global:\n  server_name: example.org\n"
	cfg, err := LoadBytes([]byte(base), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PushServer.MaxDeliveries != 64 || cfg.PushServer.MaxDeliveriesPerGateway != 16 {
		t.Fatalf("default limits %d and %d", cfg.PushServer.MaxDeliveries, cfg.PushServer.MaxDeliveriesPerGateway)
	}
	cfg, err = LoadBytes([]byte(base+"push_server:\n  max_deliveries: 8\n  max_deliveries_per_gateway: 8\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PushServer.MaxDeliveries != 8 || cfg.PushServer.MaxDeliveriesPerGateway != 8 {
		t.Fatalf("limits %d and %d", cfg.PushServer.MaxDeliveries, cfg.PushServer.MaxDeliveriesPerGateway)
	}
	for yaml, path := range map[string]string{
		"  max_deliveries: 0\n":                                  "push_server.max_deliveries:",
		"  max_deliveries_per_gateway: 0\n":                      "push_server.max_deliveries_per_gateway:",
		"  max_deliveries: 4\n  max_deliveries_per_gateway: 5\n": "push_server.max_deliveries_per_gateway:",
	} {
		if _, err := LoadBytes([]byte(base+"push_server:\n"+yaml), nil); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: %v, want an error naming %s", yaml, err, path)
		}
	}
}
