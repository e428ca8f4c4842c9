package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/matrix-org/dendrite/cmd/devcluster/proxyroute"
	"github.com/matrix-org/dendrite/internal/config"
)

// The files under test, relative to this package's directory.
const (
	composeFile   = "docker-compose.yml"
	polylithFile  = "dendrite-polylith.yaml"
	nginxFile     = "nginx.conf"
	dockerfile    = "Dockerfile"
	keygenScript  = "keygen.sh"
	k8sDir        = "k8s"
	deployDoc     = "../docs/deploy.md"
	configPath    = "/etc/dendrite/dendrite.yaml" // where every process reads its config
	proxyHTTPPort = 8008
)

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// yamlDocs decodes every document of a (multi-document) YAML file.
func yamlDocs(b []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		docs = append(docs, &n)
	}
}

// TestEveryYAMLFileParses walks docker/ and decodes every document of every YAML file.
func TestEveryYAMLFileParses(t *testing.T) {
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (!strings.HasSuffix(path, ".yml") && !strings.HasSuffix(path, ".yaml")) {
			return err
		}
		docs, err := yamlDocs(read(t, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
		}
		if len(docs) == 0 {
			t.Errorf("%s: no YAML document", path)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Fatalf("found only %d YAML files under docker/", n)
	}
}

// --- config ---------------------------------------------------------------------------

// loadStrict loads a polylith config as the processes do (config.LoadBytes with the given
// environment) and also rejects keys the config does not know, which LoadBytes ignores.
func loadStrict(b []byte, env []string) (*config.Dendrite, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(config.Defaults()); err != nil {
		return nil, fmt.Errorf("unknown or mistyped key: %w", err)
	}
	return config.LoadBytes(b, env)
}

// checkPolylith reports what makes cfg unfit for the polylith.
func checkPolylith(cfg *config.Dendrite) []string {
	var p []string
	if cfg.Global.Log.Kind != "kafka" {
		p = append(p, fmt.Sprintf("global.log.kind is %q, want kafka", cfg.Global.Log.Kind))
	}
	if len(cfg.Global.Log.Kafka.Brokers) == 0 {
		p = append(p, "global.log.kafka.brokers is empty")
	}
	if !strings.HasPrefix(cfg.Global.Database.ConnectionString, "postgres://") {
		p = append(p, "global.database.connection_string is not a postgres:// DSN")
	}
	if cfg.Global.PrivateKeyPath == "" {
		p = append(p, "global.private_key is unset: each process would make its own signing key")
	}
	return p
}

// listenPort is the port of an address such as ":7771".
func listenPort(addr string) int {
	i := strings.LastIndex(addr, ":")
	n, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		return -1
	}
	return n
}

// internalAPI is a component's internal_api section.
func internalAPI(cfg *config.Dendrite, component string) config.InternalAPI {
	if component == "roomserver" {
		return cfg.RoomServer.InternalAPI
	}
	if ia := cfg.InternalAPIOf(component); ia != nil {
		return *ia
	}
	panic("unknown component " + component)
}

// connectURLs are the URLs peers use to reach each process: component (or roomserver-N)
// -> host and port.
func connectURLs(cfg *config.Dendrite) (map[string]*url.URL, error) {
	out := map[string]*url.URL{}
	add := func(name, raw string) error {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" || u.Port() == "" {
			return fmt.Errorf("%s: connect URL %q is not http://host:port", name, raw)
		}
		out[name] = u
		return nil
	}
	for _, c := range config.Components {
		if c == "roomserver" {
			for i := 0; i < cfg.RoomServer.Shards; i++ {
				if err := add(fmt.Sprintf("roomserver-%d", i), cfg.RoomServer.ShardURL(i)); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := add(c, internalAPI(cfg, c).Connect); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// --- process contract -----------------------------------------------------------------

// flagValue is the value after --name (or -name, --name=value) in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// checkArgs reports what is wrong with a Dendrite container's arguments (after the
// ENTRYPOINT) for running component; shard is the expected --shard value or "".
func checkArgs(where string, args []string, component, shard string) []string {
	var p []string
	if len(args) == 0 || args[0] != "component" {
		p = append(p, fmt.Sprintf("%s: arguments %q must start with the subcommand component", where, args))
	}
	if v, _ := flagValue(args, "name"); v != component {
		p = append(p, fmt.Sprintf("%s: --name is %q, want %q", where, v, component))
	}
	if v, _ := flagValue(args, "config"); v != configPath {
		p = append(p, fmt.Sprintf("%s: --config is %q, want %q", where, v, configPath))
	}
	if v, ok := flagValue(args, "shard"); shard != "" && v != shard {
		p = append(p, fmt.Sprintf("%s: --shard is %q, want %q", where, v, shard))
	} else if shard == "" && ok {
		p = append(p, fmt.Sprintf("%s: --shard given to %s", where, component))
	}
	return p
}

// TestDockerfileEntrypointTakesSubcommands checks that the image's ENTRYPOINT is the bare
// binary, so `component ...` arguments reach it as os.Args[1:], that the build is static and
// that the image runs as non-root.
func TestDockerfileEntrypointTakesSubcommands(t *testing.T) {
	df := string(read(t, dockerfile))
	var entry, cmd, user string
	for _, line := range strings.Split(df, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		rest := strings.TrimSpace(strings.TrimPrefix(line, f[0]))
		switch strings.ToUpper(f[0]) {
		case "ENTRYPOINT":
			entry = rest
		case "CMD":
			cmd = rest
		case "USER":
			user = rest
		}
	}
	var ep []string
	if err := yaml.Unmarshal([]byte(entry), &ep); err != nil || len(ep) != 1 || !strings.HasSuffix(ep[0], "/dendrite") {
		t.Errorf("ENTRYPOINT %s: want the exec form naming only the dendrite binary", entry)
	}
	var c []string
	if err := yaml.Unmarshal([]byte(cmd), &c); err != nil || slices.Contains(c, "component") {
		t.Errorf("CMD %s: want the monolith's default arguments in exec form", cmd)
	}
	if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
		t.Errorf("USER %q: the image must run as non-root", user)
	}
	if !strings.Contains(df, "CGO_ENABLED=0") {
		t.Error("the build must be static (CGO_ENABLED=0)")
	}
}

// --- docker compose -------------------------------------------------------------------

// composeService is what the checks need of a service, as compose-go's loader (the library
// Docker Compose itself uses) resolves it: interpolated, merged, defaults applied.
type composeService struct {
	Image       string
	Command     []string
	Environment map[string]string
	// Volumes are "source:target" with ":ro" for read-only mounts.
	Volumes []string
	// DependsOn is service name -> condition.
	DependsOn map[string]string
	// Ports are "host_ip:published:target".
	Ports []string
	CPUs  float32
	// Healthcheck is the health check's test, nil for none.
	Healthcheck []string
}

type compose struct {
	Services map[string]composeService
}

// parseCompose loads the compose file with compose-go's loader, with env as the whole
// environment: interpolation (a required ${VAR:?message} that is unset fails the load, as
// it stops Compose), schema validation (an unknown key fails) and normalisation.
func parseCompose(src []byte, env map[string]string) (compose, error) {
	project, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  ".",
		ConfigFiles: []types.ConfigFile{{Filename: composeFile, Content: src}},
		Environment: types.Mapping(env),
	}, func(o *loader.Options) { o.SetProjectName("dendrite", true) })
	if err != nil {
		return compose{}, err
	}
	c := compose{Services: map[string]composeService{}}
	for name, svc := range project.Services {
		s := composeService{Image: svc.Image, Command: svc.Command, Environment: map[string]string{}, DependsOn: map[string]string{}, CPUs: svc.CPUS}
		for k, v := range svc.Environment {
			if v != nil {
				s.Environment[k] = *v
			}
		}
		for _, v := range svc.Volumes {
			m := v.Source + ":" + v.Target
			if v.Type == types.VolumeTypeBind {
				if rel, err := filepath.Rel(project.WorkingDir, v.Source); err == nil {
					m = "./" + rel + ":" + v.Target
				}
			}
			if v.ReadOnly {
				m += ":ro"
			}
			s.Volumes = append(s.Volumes, m)
		}
		for dep, d := range svc.DependsOn {
			s.DependsOn[dep] = d.Condition
		}
		for _, port := range svc.Ports {
			s.Ports = append(s.Ports, fmt.Sprintf("%s:%s:%d", port.HostIP, port.Published, port.Target))
		}
		if svc.HealthCheck != nil && !svc.HealthCheck.Disable {
			s.Healthcheck = svc.HealthCheck.Test
		}
		c.Services[name] = s
	}
	return c, nil
}

// env is the service's environment as KEY=VALUE (after interpolation).
func (s composeService) env() []string {
	var out []string
	for k, v := range s.Environment {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// isDendrite tells a Dendrite container from the backing services.
func (s composeService) isDendrite() bool {
	return strings.Contains(s.Image, "dendrite") || slices.Contains(s.Command, "component")
}

var shardService = regexp.MustCompile(`^roomserver-(\d+)$`)

// checkCompose checks the compose project against the process contract; polylith is the
// config file every Dendrite service mounts.
func checkCompose(c compose, polylith []byte) []string {
	var p []string
	shards := map[int]bool{}
	for name := range c.Services {
		if m := shardService.FindStringSubmatch(name); m != nil {
			n, _ := strconv.Atoi(m[1])
			shards[n] = true
		}
	}
	for _, comp := range config.Components {
		if comp == "roomserver" {
			if len(shards) == 0 {
				p = append(p, "compose: no roomserver-N service")
			}
			for i := 0; i < len(shards); i++ {
				if !shards[i] {
					p = append(p, fmt.Sprintf("compose: roomserver shards are not numbered 0..%d", len(shards)-1))
					break
				}
			}
			continue
		}
		if _, ok := c.Services[comp]; !ok {
			p = append(p, "compose: no service "+comp)
		}
	}
	for name, s := range c.Services {
		if !s.isDendrite() {
			continue
		}
		where := "compose service " + name
		comp, shard := name, ""
		if m := shardService.FindStringSubmatch(name); m != nil {
			comp, shard = "roomserver", m[1]
		}
		if !slices.Contains(config.Components, comp) {
			p = append(p, where+": runs Dendrite but is named after no component")
			continue
		}
		p = append(p, checkArgs(where, s.Command, comp, shard)...)
		if !slices.Contains(s.Volumes, "./"+polylithFile+":"+configPath+":ro") {
			p = append(p, fmt.Sprintf("%s: does not mount ./%s at %s read-only", where, polylithFile, configPath))
		}
		deps := s.DependsOn
		for _, backing := range []string{"kafka", "postgres"} {
			if deps[backing] != "service_healthy" {
				p = append(p, fmt.Sprintf("%s: must wait for %s to be healthy", where, backing))
			}
		}
		if comp == "clientapi" || comp == "syncapi" {
			for i := range shards {
				if _, ok := deps[fmt.Sprintf("roomserver-%d", i)]; !ok {
					p = append(p, fmt.Sprintf("%s: does not depend on roomserver-%d", where, i))
				}
			}
			if _, ok := deps["userapi"]; !ok {
				p = append(p, where+": does not depend on userapi")
			}
		}
		cfg, err := loadStrict(polylith, s.env())
		if err != nil {
			p = append(p, fmt.Sprintf("%s: config: %v", where, err))
			continue
		}
		for _, e := range checkPolylith(cfg) {
			p = append(p, where+": "+e)
		}
		if cfg.RoomServer.Shards != len(shards) {
			p = append(p, fmt.Sprintf("%s: room_server.shards is %d but compose runs %d roomserver services", where, cfg.RoomServer.Shards, len(shards)))
		}
		urls, err := connectURLs(cfg)
		if err != nil {
			p = append(p, where+": "+err.Error())
			continue
		}
		for target, u := range urls {
			targetComp := target
			if shardService.MatchString(target) {
				targetComp = "roomserver"
			}
			if u.Hostname() != target {
				p = append(p, fmt.Sprintf("%s: reaches %s at %s, not at its compose service name", where, target, u))
			}
			if want := listenPort(internalAPI(cfg, targetComp).Listen); u.Port() != strconv.Itoa(want) {
				p = append(p, fmt.Sprintf("%s: reaches %s on port %s but it listens on %d", where, target, u.Port(), want))
			}
		}
		for _, b := range cfg.Global.Log.Kafka.Brokers {
			if host, _, _ := strings.Cut(b, ":"); c.Services[host].Image == "" {
				p = append(p, fmt.Sprintf("%s: Kafka broker %s is no compose service", where, b))
			}
		}
	}
	if k, ok := c.Services["kafka"]; !ok || !strings.HasPrefix(k.Image, "apache/kafka") {
		p = append(p, "compose: no kafka service on the apache/kafka image")
	} else if roles := k.Environment["KAFKA_PROCESS_ROLES"]; !strings.Contains(roles, "broker") || !strings.Contains(roles, "controller") {
		p = append(p, "compose: kafka must run KRaft as broker,controller")
	}
	if pg, ok := c.Services["postgres"]; !ok || !strings.HasPrefix(pg.Image, "postgres:15") || !slices.Contains(pg.Healthcheck, "pg_isready") {
		p = append(p, "compose: no postgres:15 service with a pg_isready health check")
	}
	if px, ok := c.Services["proxy"]; !ok || !slices.Contains(px.Ports, fmt.Sprintf("127.0.0.1:%d:%d", proxyHTTPPort, proxyHTTPPort)) {
		p = append(p, fmt.Sprintf("compose: the proxy must be published on 127.0.0.1:%d by default, not on every interface", proxyHTTPPort))
	}
	sort.Strings(p)
	return p
}

// operatorEnv is the environment an operator runs compose with: the secrets it requires.
var operatorEnv = map[string]string{
	"DENDRITE_REGISTRATION_SHARED_SECRET": "registrationSecret0123456789",
	"DENDRITE_POSTGRES_PASSWORD":          "postgresPassword0123456789",
}

func loadCompose(t *testing.T) compose {
	t.Helper()
	c, err := parseCompose(read(t, composeFile), operatorEnv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// secretKey names the environment variables and config keys that carry secrets.
var secretKey = regexp.MustCompile(`SECRET|PASSWORD|CONNECTION_STRING`)

// checkComposeSecrets reports the secrets compose would start without: every secret must
// come from a required variable (${VAR:?message}), so that an unset one stops Compose
// instead of falling back to a value everyone knows.
func checkComposeSecrets(src []byte) []string {
	var p []string
	if _, err := parseCompose(src, nil); err == nil {
		return []string{"compose: starts with no secrets set"}
	}
	for name := range operatorEnv {
		env := maps.Clone(operatorEnv)
		delete(env, name)
		if _, err := parseCompose(src, env); err == nil || !strings.Contains(err.Error(), name) {
			p = append(p, "compose: starts without "+name)
		}
	}
	c, err := parseCompose(src, operatorEnv)
	if err != nil {
		return append(p, "compose: "+err.Error())
	}
	for name, s := range c.Services {
		for k, v := range s.Environment {
			if !secretKey.MatchString(k) {
				continue
			}
			given := false
			for _, secret := range operatorEnv {
				given = given || strings.Contains(v, secret)
			}
			if !given {
				p = append(p, fmt.Sprintf("compose service %s: %s is not taken from the operator's secrets", name, k))
			}
		}
	}
	sort.Strings(p)
	return p
}

// TestComposeRefusesToStartWithoutSecrets checks that compose needs the operator's secrets
// and passes them on, and that the check catches the defaults it replaced.
func TestComposeRefusesToStartWithoutSecrets(t *testing.T) {
	src := read(t, composeFile)
	for _, problem := range checkComposeSecrets(src) {
		t.Error(problem)
	}
	c := loadCompose(t)
	if got := c.Services["clientapi"].Environment["DENDRITE_CLIENT_API_REGISTRATION_SHARED_SECRET"]; got != operatorEnv["DENDRITE_REGISTRATION_SHARED_SECRET"] {
		t.Errorf("clientapi gets the registration secret %q", got)
	}
	if got := c.Services["postgres"].Environment["POSTGRES_PASSWORD"]; got != operatorEnv["DENDRITE_POSTGRES_PASSWORD"] {
		t.Errorf("postgres gets the password %q", got)
	}
	for name, mutate := range map[string]func(string) string{
		"default registration secret": func(s string) string {
			return strings.Replace(s, "${DENDRITE_REGISTRATION_SHARED_SECRET:?", "${DENDRITE_REGISTRATION_SHARED_SECRET:-change-me", 1)
		},
		"fixed postgres password": func(s string) string {
			return regexp.MustCompile(`POSTGRES_PASSWORD: .*`).ReplaceAllString(s, "POSTGRES_PASSWORD: dendrite")
		},
	} {
		if broken := mutate(string(src)); broken == string(src) {
			t.Errorf("%s: mutation did not apply", name)
		} else if len(checkComposeSecrets([]byte(broken))) == 0 {
			t.Errorf("%s: the secrets check found nothing wrong", name)
		}
	}
	open := strings.Replace(string(src), "${DENDRITE_BIND_ADDRESS:-127.0.0.1}:", "", 1)
	if c, err := parseCompose([]byte(open), operatorEnv); err != nil || len(checkCompose(c, read(t, polylithFile))) == 0 {
		t.Error("a proxy published on every interface passed the compose check")
	}
}

func TestComposeRunsEveryComponent(t *testing.T) {
	for _, problem := range checkCompose(loadCompose(t), read(t, polylithFile)) {
		t.Error(problem)
	}
}

// TestComposeCheckCanFail breaks the compose project in the ways the check must catch.
func TestComposeCheckCanFail(t *testing.T) {
	polylith := read(t, polylithFile)
	cases := map[string]func(c *compose){
		"missing userapi": func(c *compose) { delete(c.Services, "userapi") },
		"wrong --name": func(c *compose) {
			s := c.Services["syncapi"]
			s.Command = []string{"component", "--config", configPath, "--name", "clientapi"}
			c.Services["syncapi"] = s
		},
		"shard count disagrees": func(c *compose) { delete(c.Services, "roomserver-1") },
		"monolith args": func(c *compose) {
			s := c.Services["clientapi"]
			s.Command = []string{"--data", "/data"}
			c.Services["clientapi"] = s
		},
		"embedded log": func(c *compose) {
			s := c.Services["userapi"]
			s.Environment = map[string]string{"DENDRITE_GLOBAL_LOG_KIND": "embedded", "DENDRITE_ROOM_SERVER_SHARDS": "2"}
			c.Services["userapi"] = s
		},
	}
	for name, breakIt := range cases {
		c := loadCompose(t)
		breakIt(&c)
		problems := checkCompose(c, polylith)
		if len(problems) == 0 {
			t.Errorf("%s: the compose check found nothing wrong", name)
		}
		t.Logf("%s: %q", name, problems)
	}
	misspelt := bytes.Replace(read(t, composeFile), []byte("    restart: unless-stopped"), []byte("    restrat: unless-stopped"), 1)
	if _, err := parseCompose(misspelt, operatorEnv); err == nil {
		t.Error("a compose file with a misspelt key loaded")
	}
	if len(checkCompose(loadCompose(t), bytes.Replace(polylith, []byte("kind: kafka"), []byte("kind: kafak"), 1))) == 0 {
		t.Error("a config with a bad log kind passed")
	}
}

// --- nginx ----------------------------------------------------------------------------

// directive is one nginx directive with its arguments and, for a block, its children.
type directive struct {
	name     string
	args     []string
	children []*directive
}

// parseNginx parses nginx's configuration syntax: words, quoted strings, comments,
// semicolons and braces.
func parseNginx(src string) ([]*directive, error) {
	var tokens []string
	for i := 0; i < len(src); {
		switch ch := src[i]; {
		case ch == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r':
			i++
		case ch == ';' || ch == '{' || ch == '}':
			tokens = append(tokens, string(ch))
			i++
		case ch == '"' || ch == '\'':
			j := i + 1
			for j < len(src) && src[j] != ch {
				if src[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(src) {
				return nil, errors.New("unterminated string")
			}
			tokens = append(tokens, "\x00"+src[i+1:j]) // marked: a string, never punctuation
			i = j + 1
		default:
			j := i
			for j < len(src) && !strings.ContainsRune(" \t\r\n;{}#", rune(src[j])) {
				j++
			}
			tokens = append(tokens, src[i:j])
			i = j
		}
	}
	pos := 0
	var block func(depth int) ([]*directive, error)
	block = func(depth int) ([]*directive, error) {
		var out []*directive
		var cur []string
		for pos < len(tokens) {
			tok := tokens[pos]
			pos++
			switch tok {
			case ";":
				if len(cur) == 0 {
					return nil, errors.New("empty directive")
				}
				out = append(out, &directive{name: cur[0], args: cur[1:]})
				cur = nil
			case "{":
				if len(cur) == 0 {
					return nil, errors.New("block without a name")
				}
				children, err := block(depth + 1)
				if err != nil {
					return nil, err
				}
				out = append(out, &directive{name: cur[0], args: cur[1:], children: children})
				cur = nil
			case "}":
				if depth == 0 || len(cur) != 0 {
					return nil, errors.New("unbalanced }")
				}
				return out, nil
			default:
				cur = append(cur, strings.TrimPrefix(tok, "\x00"))
			}
		}
		if depth != 0 || len(cur) != 0 {
			return nil, errors.New("unexpected end of file")
		}
		return out, nil
	}
	return block(0)
}

func find(ds []*directive, name string) []*directive {
	var out []*directive
	for _, d := range ds {
		if d.name == name {
			out = append(out, d)
		}
	}
	return out
}

// location is a server's location block reduced to what routing needs.
type location struct {
	modifier string // "", "=", "^~", "~", "~*"
	pattern  string
	re       *regexp.Regexp
	block    *directive
}

// route picks the location nginx would use for path: an exact match; else the longest
// prefix if it is ^~; else the first matching regex in file order; else the longest prefix.
func route(locs []location, path string) *location {
	var longest *location
	for i := range locs {
		l := &locs[i]
		switch l.modifier {
		case "=":
			if path == l.pattern {
				return l
			}
		case "", "^~":
			if strings.HasPrefix(path, l.pattern) && (longest == nil || len(l.pattern) > len(longest.pattern)) {
				longest = l
			}
		}
	}
	if longest != nil && longest.modifier == "^~" {
		return longest
	}
	for i := range locs {
		if l := &locs[i]; l.re != nil && l.re.MatchString(path) {
			return l
		}
	}
	return longest
}

// nginxMap is a map block: a source variable, regex variants tried in order, a default.
type nginxMap struct {
	source   string
	variants []mapVariant
	def      string
}

type mapVariant struct {
	re    *regexp.Regexp
	value string
}

// nginxRouting is the parsed front proxy: its upstreams (name -> servers), maps (result
// variable -> map) and locations.
type nginxRouting struct {
	upstreams map[string][]string
	maps      map[string]*nginxMap
	locations []location
	server    *directive
	top       []*directive
}

func parseMap(d *directive) (string, *nginxMap, error) {
	if len(d.args) != 2 {
		return "", nil, fmt.Errorf("map %v: want a source and a result variable", d.args)
	}
	m := &nginxMap{source: d.args[0]}
	for _, v := range d.children {
		if len(v.args) != 1 {
			return "", nil, fmt.Errorf("map %s: variant %s: want one value", d.args[1], v.name)
		}
		if v.name == "default" {
			m.def = v.args[0]
			continue
		}
		expr, ok := strings.CutPrefix(v.name, "~")
		if !ok {
			return "", nil, fmt.Errorf("map %s: variant %q: only regexes are modelled", d.args[1], v.name)
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return "", nil, fmt.Errorf("map %s: %w", d.args[1], err)
		}
		m.variants = append(m.variants, mapVariant{re, v.args[0]})
	}
	return d.args[1], m, nil
}

func parseRouting(src string) (*nginxRouting, error) {
	top, err := parseNginx(src)
	if err != nil {
		return nil, err
	}
	https := find(top, "http")
	if len(https) != 1 {
		return nil, errors.New("want one http block")
	}
	r := &nginxRouting{upstreams: map[string][]string{}, maps: map[string]*nginxMap{}, top: top}
	for _, u := range find(https[0].children, "upstream") {
		for _, s := range find(u.children, "server") {
			r.upstreams[u.args[0]] = append(r.upstreams[u.args[0]], s.args[0])
		}
	}
	for _, d := range find(https[0].children, "map") {
		name, m, err := parseMap(d)
		if err != nil {
			return nil, err
		}
		r.maps[name] = m
	}
	servers := find(https[0].children, "server")
	if len(servers) != 1 {
		return nil, errors.New("want one server block")
	}
	r.server = servers[0]
	for _, d := range find(r.server.children, "location") {
		l := location{pattern: d.args[len(d.args)-1], block: d}
		if len(d.args) == 2 {
			l.modifier = d.args[0]
		}
		switch l.modifier {
		case "~", "~*":
			expr := l.pattern
			if l.modifier == "~*" {
				expr = "(?i)" + expr
			}
			if l.re, err = regexp.Compile(expr); err != nil {
				return nil, fmt.Errorf("location %s: %w", l.pattern, err)
			}
		case "", "=", "^~":
		default:
			return nil, fmt.Errorf("location %v: unknown modifier", d.args)
		}
		if pp := find(d.children, "proxy_pass"); len(pp) == 1 {
			u, err := url.Parse(pp[0].args[0])
			if err != nil {
				return nil, err
			}
			if u.Path != "" {
				return nil, fmt.Errorf("location %s: proxy_pass %s names a URI, which rewrites the request path", l.pattern, pp[0].args[0])
			}
		}
		r.locations = append(r.locations, l)
	}
	return r, nil
}

// variable evaluates $name for a request whose request line carried requestURI.
func (r *nginxRouting) variable(name, requestURI string) (string, error) {
	if name == "$request_uri" {
		return requestURI, nil
	}
	m, ok := r.maps[name]
	if !ok {
		return "", fmt.Errorf("variable %s is not modelled", name)
	}
	src, err := r.variable(m.source, requestURI)
	if err != nil {
		return "", err
	}
	for _, v := range m.variants {
		if v.re.MatchString(src) {
			return v.value, nil
		}
	}
	return m.def, nil
}

// normalizeURI is the URI location blocks are matched against: the path of requestURI,
// percent-decoded, with repeated slashes merged (nginx's merge_slashes).
func normalizeURI(requestURI string) string {
	path, _, _ := strings.Cut(requestURI, "?")
	if dec, err := url.PathUnescape(path); err == nil {
		path = dec
	}
	for strings.Contains(path, "//") {
		path = strings.ReplaceAll(path, "//", "/")
	}
	return path
}

// upstreamFor is the upstream nginx sends a request to ("" when it answers itself) and the
// location that handles it.
func (r *nginxRouting) upstreamFor(requestURI string) (string, *location, error) {
	l := route(r.locations, normalizeURI(requestURI))
	if l == nil {
		return "", nil, nil
	}
	for _, d := range l.block.children {
		switch d.name {
		case "return":
			return "", l, nil
		case "if":
			// Only `if ($var = "value") { return ...; }` is modelled.
			cond := slices.Clone(d.args)
			if len(cond) > 0 && cond[len(cond)-1] == ")" {
				cond = cond[:len(cond)-1]
			}
			if len(cond) > 0 {
				cond[0] = strings.TrimPrefix(cond[0], "(")
				cond[len(cond)-1] = strings.TrimSuffix(cond[len(cond)-1], ")")
			}
			if len(cond) != 3 || cond[1] != "=" || len(find(d.children, "return")) != 1 {
				return "", l, fmt.Errorf("location %s: if %v is not modelled", l.pattern, d.args)
			}
			v, err := r.variable(cond[0], requestURI)
			if err != nil {
				return "", l, err
			}
			if v == cond[2] {
				return "", l, nil
			}
		case "proxy_pass":
			u, err := url.Parse(d.args[0])
			if err != nil {
				return "", l, err
			}
			host := u.Host
			if strings.HasPrefix(host, "$") {
				if host, err = r.variable(host, requestURI); err != nil {
					return "", l, err
				}
			}
			if _, ok := r.upstreams[host]; !ok {
				return "", l, fmt.Errorf("location %s: proxy_pass to %q, which is no upstream", l.pattern, host)
			}
			return host, l, nil
		}
	}
	return "", l, nil
}

// proxySamples are request URIs (as sent, with queries) that the front proxy must route as
// proxyroute.Route does: every rule's pattern filled in with encoded slashes in each ID,
// and near misses of each.
func proxySamples() []string {
	fill := strings.NewReplacer("{version}", "v3", "{roomId}", "!a%2Fb%3Aexample.org", "{eventId}", "$e%2Ff", "*", "x/y")
	out := []string{
		"/", "/metrics", "/debug/pprof/", "/_matrix/client", "/_matrix/clientx/v3/sync",
		"/_matrix/client/r0/sync?since=s1&timeout=30000",
		"/_matrix/client/unstable/sync",
		"/_matrix/client/v3/rooms/!a/b%3Aexample.org/messages",
		"/_matrix/client/v3/rooms/!a%3Ab/context/$ab/cd",
		"/_matrix/client/v3/rooms/!a%3Ab/state/x/a%2Fmessages",
		"/_matrix/client/v3/rooms/!a%3Ab/send/m.t/txn%2Fmessages",
		"/_matrix/client/v3/rooms/!a%3Ab/messages/extra",
		"/_synapse/admin/v1/register",
		"/_matrix/federation/v1/send/t%2F1",
		"/_matrix/key/v2/query/example.org",
	}
	for _, rule := range proxyroute.Rules {
		p := fill.Replace(rule.Pattern)
		out = append(out, p, p+"?a=b", p+"/extra", strings.ReplaceAll(p, "%2F", "/"))
	}
	return out
}

// checkNginx checks the routing contract (every sample goes where proxyroute.Route sends
// it), the upstream addresses (public listen ports of clientapi, syncapi and federationapi
// in cfg, reached by service name), the worker count against the CPU limit and the limits.
func checkNginx(src string, cfg *config.Dendrite, cpuLimit int) []string {
	r, err := parseRouting(src)
	if err != nil {
		return []string{"nginx.conf: " + err.Error()}
	}
	var p []string
	for _, uri := range proxySamples() {
		path, _, _ := strings.Cut(uri, "?")
		want := proxyroute.Route(path)
		got, _, err := r.upstreamFor(uri)
		if err != nil {
			p = append(p, fmt.Sprintf("nginx.conf: %s: %v", uri, err))
		} else if got != want {
			p = append(p, fmt.Sprintf("nginx.conf: %s goes to %q, but devcluster's proxy sends it to %q", uri, got, want))
		}
	}
	for name, listen := range map[string]string{proxyroute.ClientAPI: cfg.ClientAPI.Listen, proxyroute.SyncAPI: cfg.SyncAPI.Listen, proxyroute.FederationAPI: cfg.FederationAPI.Listen} {
		if want := fmt.Sprintf("%s:%d", name, listenPort(listen)); !slices.Equal(r.upstreams[name], []string{want}) {
			p = append(p, fmt.Sprintf("nginx.conf: upstream %s is %v, want [%s]", name, r.upstreams[name], want))
		}
	}
	if w := find(r.top, "worker_processes"); len(w) != 1 || w[0].args[0] != strconv.Itoa(cpuLimit) {
		p = append(p, fmt.Sprintf("nginx.conf: worker_processes must be %d, the proxy container's CPU limit", cpuLimit))
	}
	if l := find(r.server.children, "listen"); len(l) != 1 || l[0].args[0] != strconv.Itoa(proxyHTTPPort) {
		p = append(p, fmt.Sprintf("nginx.conf: the server must listen on %d", proxyHTTPPort))
	}
	if b := find(r.server.children, "client_max_body_size"); len(b) != 1 || nginxSize(b[0].args[0]) < cfg.ClientAPI.MaxBodyBytes {
		p = append(p, fmt.Sprintf("nginx.conf: client_max_body_size must allow client_api.max_body_bytes (%d)", cfg.ClientAPI.MaxBodyBytes))
	}
	for _, uri := range []string{"/_matrix/client/v3/sync", "/_matrix/client/r0/sync?timeout=30000"} {
		if _, sync, _ := r.upstreamFor(uri); sync == nil || len(find(sync.block.children, "proxy_read_timeout")) == 0 {
			p = append(p, "nginx.conf: the /sync location needs a long proxy_read_timeout for long-polls")
		}
	}
	headers := map[string]bool{}
	for _, h := range find(r.server.children, "proxy_set_header") {
		headers[strings.ToLower(h.args[0])] = true
	}
	for _, h := range []string{"host", "x-forwarded-for", "x-forwarded-proto"} {
		if !headers[h] {
			p = append(p, "nginx.conf: does not pass the "+h+" header")
		}
	}
	p = append(p, checkNginxCORS(r.server)...)
	sort.Strings(p)
	return p
}

// checkNginxCORS checks that every answer nginx makes itself (a return inside a location's
// if, for a path no process serves) carries the spec's CORS headers, as the components'
// own answers do: a browser client otherwise sees a network error instead of the 404.
func checkNginxCORS(server *directive) []string {
	var p []string
	for _, loc := range find(server.children, "location") {
		for _, cond := range find(loc.children, "if") {
			if len(find(cond.children, "return")) == 0 {
				continue
			}
			added := map[string]bool{}
			for _, h := range find(cond.children, "add_header") {
				added[strings.ToLower(h.args[0])] = true
			}
			for _, h := range []string{"access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers"} {
				if !added[h] {
					p = append(p, fmt.Sprintf("nginx.conf: location %v answers without the %s header", loc.args, h))
				}
			}
		}
	}
	return p
}

// nginxSize parses "10m", "512k", "1g" or bytes.
func nginxSize(s string) int64 {
	mult := int64(1)
	switch strings.ToLower(s[len(s)-1:]) {
	case "k":
		mult, s = 1<<10, s[:len(s)-1]
	case "m":
		mult, s = 1<<20, s[:len(s)-1]
	case "g":
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n * mult
}

func polylithConfig(t *testing.T) *config.Dendrite {
	t.Helper()
	cfg, err := loadStrict(read(t, polylithFile), loadCompose(t).Services["clientapi"].env())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestPolylithConfigLoads(t *testing.T) {
	cfg := polylithConfig(t)
	for _, problem := range checkPolylith(cfg) {
		t.Error(polylithFile + ": " + problem)
	}
	if cfg.RoomServer.Shards != 2 {
		t.Errorf("%s: room_server.shards = %d, want 2", polylithFile, cfg.RoomServer.Shards)
	}
}

// TestNginxAgreesWithDevclusterProxy checks docker/nginx.conf against the routing table of
// cmd/devcluster/proxyroute (room and event IDs with encoded slashes included), its
// upstreams, limits and worker count.
func TestNginxAgreesWithDevclusterProxy(t *testing.T) {
	for _, problem := range checkNginx(string(read(t, nginxFile)), polylithConfig(t), proxyCPULimit(t)) {
		t.Error(problem)
	}
}

// TestNginxCheckCanFail breaks the proxy config in the ways the check must catch.
func TestNginxCheckCanFail(t *testing.T) {
	src := string(read(t, nginxFile))
	cfg := polylithConfig(t)
	cpus := proxyCPULimit(t)
	mutations := map[string]func(string) string{
		// The routing before this check: locations match the decoded URI, where an encoded
		// slash in a room ID splits it, so /messages of such a room went to clientapi.
		"decoded routing": func(s string) string {
			s = strings.Replace(s, "\"~^/_matrix/client/[^/?]+/rooms/[^/?]+/messages(\\?|$)\" syncapi;\n", "", 1)
			return strings.Replace(s, "location / {", "location ~ ^/_matrix/client/[^/]+/rooms/[^/]+/messages$ {\n proxy_pass http://syncapi;\n }\n location / {", 1)
		},
		"sync to clientapi": func(s string) string {
			return strings.Replace(s, "[^/?]+/sync(\\?|$)\" syncapi;", "[^/?]+/sync(\\?|$)\" clientapi;", 1)
		},
		"messages unrouted": func(s string) string { return strings.Replace(s, "/messages(", "/mesages(", 1) },
		"context allows slashes": func(s string) string {
			return strings.Replace(s, "/context/[^/?]+(", "/context/.+(", 1)
		},
		"no _synapse": func(s string) string { return strings.Replace(s, "\"~^/_synapse/\"", "\"~^/_synapsex/\"", 1) },
		"no federation": func(s string) string {
			return strings.Replace(s, "\"~^/_matrix/federation/\"", "\"~^/_matrix/federationx/\"", 1)
		},
		"no 404": func(s string) string { return strings.Replace(s, "default \"\";", "default clientapi;", 1) },
		"unknown upstream": func(s string) string {
			return strings.Replace(s, "\"~^/_matrix/key/\" federationapi;", "\"~^/_matrix/key/\" keyserver;", 1)
		},
		"wrong port": func(s string) string { return strings.Replace(s, "server syncapi:8073;", "server syncapi:7773;", 1) },
		"small bodies": func(s string) string {
			return strings.Replace(s, "client_max_body_size 10m;", "client_max_body_size 1m;", 1)
		},
		"path rewritten": func(s string) string {
			return strings.Replace(s, "proxy_pass http://$dendrite_upstream;", "proxy_pass http://$dendrite_upstream/;", 1)
		},
		"workers from the node": func(s string) string {
			return strings.Replace(s, "worker_processes 1;", "worker_processes auto;", 1)
		},
		"sync timeout": func(s string) string { return strings.Replace(s, "proxy_read_timeout 180s;", "", 1) },
		"404 without CORS": func(s string) string {
			return strings.Replace(s, "add_header Access-Control-Allow-Origin \"*\" always;", "", 1)
		},
		"unbalanced": func(s string) string { return strings.Replace(s, "}", "", 1) },
		"metrics routed": func(s string) string {
			return strings.Replace(s, "\"~^/_synapse/\" clientapi;", "\"~^/_synapse/\" clientapi;\n        \"~^/metrics\" clientapi;", 1)
		},
	}
	for name, mutate := range mutations {
		broken := mutate(src)
		if broken == src {
			t.Errorf("%s: mutation did not apply; update the test", name)
			continue
		}
		problems := checkNginx(broken, cfg, cpus)
		if len(problems) == 0 {
			t.Errorf("%s: the nginx check found nothing wrong", name)
		}
		t.Logf("%s: %q", name, problems)
	}
}

// --- Kubernetes -----------------------------------------------------------------------

type k8sPort struct {
	Name          string    `yaml:"name"`
	ContainerPort int       `yaml:"containerPort"`
	Port          int       `yaml:"port"`
	TargetPort    yaml.Node `yaml:"targetPort"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sSecurityContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
}

type k8sEnvVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type k8sContainer struct {
	Name           string      `yaml:"name"`
	Image          string      `yaml:"image"`
	Command        []string    `yaml:"command"`
	Args           []string    `yaml:"args"`
	Ports          []k8sPort   `yaml:"ports"`
	Env            []k8sEnvVar `yaml:"env"`
	LivenessProbe  *k8sProbe   `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe   `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *k8sSecurityContext `yaml:"securityContext"`
}

type k8sObject struct {
	file string
	// generated marks a ConfigMap made by a configMapGenerator.
	generated bool
	// policy is a NetworkPolicy, decoded strictly.
	policy   *networkingv1.NetworkPolicy
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas    *int      `yaml:"replicas"`
		ServiceName string    `yaml:"serviceName"`
		ClusterIP   string    `yaml:"clusterIP"`
		Selector    yaml.Node `yaml:"selector"`
		Ports       []k8sPort `yaml:"ports"`
		Template    struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext *k8sSecurityContext `yaml:"securityContext"`
				Containers      []k8sContainer      `yaml:"containers"`
				Volumes         []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// kustomization is docker/k8s/kustomization.yaml.
type kustomization struct {
	APIVersion         string   `yaml:"apiVersion"`
	Kind               string   `yaml:"kind"`
	Resources          []string `yaml:"resources"`
	ConfigMapGenerator []struct {
		Name    string   `yaml:"name"`
		Files   []string `yaml:"files"`
		Options *struct {
			DisableNameSuffixHash bool `yaml:"disableNameSuffixHash"`
		} `yaml:"options"`
	} `yaml:"configMapGenerator"`
	GeneratorOptions *struct {
		DisableNameSuffixHash bool `yaml:"disableNameSuffixHash"`
	} `yaml:"generatorOptions"`
	Images []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
		Digest  string `yaml:"digest"`
	} `yaml:"images"`
}

// decodeStrict decodes b into v, rejecting keys v does not know.
func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// apiTypes are the Kubernetes API types the manifests may hold, by apiVersion and kind.
var apiTypes = map[string]func() any{
	"v1/Service":                         func() any { return &corev1.Service{} },
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/PersistentVolumeClaim":           func() any { return &corev1.PersistentVolumeClaim{} },
	"apps/v1/Deployment":                 func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                func() any { return &appsv1.StatefulSet{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
}

// decodeAPIObject decodes a manifest strictly into its Kubernetes API type, as the API
// server would: an unknown or misspelt field, a wrong type or an unknown kind is an error.
func decodeAPIObject(doc *yaml.Node) (any, error) {
	var head struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
	}
	if err := doc.Decode(&head); err != nil {
		return nil, err
	}
	newObj, ok := apiTypes[head.APIVersion+"/"+head.Kind]
	if !ok {
		return nil, fmt.Errorf("apiVersion %s kind %s is not a type these manifests use", head.APIVersion, head.Kind)
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	obj := newObj()
	if err := sigsyaml.UnmarshalStrict(b, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// k8sManifests is what `kubectl apply -k docker/k8s` would apply: the resources' objects
// and the generated ConfigMaps (under their generator names; kustomize appends a hash).
type k8sManifests struct {
	kust kustomization
	objs []*k8sObject
}

func loadK8s(t *testing.T) k8sManifests {
	t.Helper()
	var m k8sManifests
	if err := decodeStrict(read(t, filepath.Join(k8sDir, "kustomization.yaml")), &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	for _, res := range m.kust.Resources {
		f := filepath.Join(k8sDir, res)
		docs, err := yamlDocs(read(t, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, d := range docs {
			o := &k8sObject{file: f}
			if err := d.Decode(o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			typed, err := decodeAPIObject(d)
			if err != nil {
				t.Fatalf("%s: %s %s: %v", f, o.Kind, o.Metadata.Name, err)
			}
			if np, ok := typed.(*networkingv1.NetworkPolicy); ok {
				o.policy = np
			}
			m.objs = append(m.objs, o)
		}
	}
	generated := map[string]bool{}
	for _, g := range m.kust.ConfigMapGenerator {
		o := &k8sObject{file: "kustomization.yaml", Kind: "ConfigMap", Data: map[string]string{}, generated: true}
		o.Metadata.Name = g.Name
		for _, f := range g.Files {
			key, path, ok := strings.Cut(f, "=")
			if !ok {
				key, path = filepath.Base(f), f
			}
			o.Data[key] = string(read(t, filepath.Join(k8sDir, path)))
			generated[filepath.Clean(path)] = true
		}
		m.objs = append(m.objs, o)
	}
	files, err := filepath.Glob(filepath.Join(k8sDir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(m.kust.Resources, b) && !generated[b] {
			t.Errorf("%s is neither a resource nor a generator file of kustomization.yaml", f)
		}
	}
	return m
}

func findObject(objs []*k8sObject, kind, name string) *k8sObject {
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	return nil
}

// containerPort resolves a probe's or Service's port (number or name) in c.
func containerPort(c *k8sContainer, n yaml.Node) int {
	if v, err := strconv.Atoi(n.Value); err == nil {
		return v
	}
	for _, p := range c.Ports {
		if p.Name == n.Value {
			return p.ContainerPort
		}
	}
	return -1
}

// k8sEnv is a container's environment as the process would see it: literal values and
// values from the Secret dendrite-secrets as the operator creates it (operatorSecret).
func k8sEnv(c *k8sContainer) []string {
	var out []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			out = append(out, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "dendrite-secrets":
			if v, ok := operatorSecret[e.ValueFrom.SecretKeyRef.Key]; ok {
				out = append(out, e.Name+"="+v)
			}
		}
	}
	return out
}

const podIndexField = "metadata.labels['apps.kubernetes.io/pod-index']"

// checkK8s checks the manifests against the process contract.
func checkK8s(objs []*k8sObject) []string {
	var p []string
	cm := findObject(objs, "ConfigMap", "dendrite-config")
	if cm == nil || cm.Data["dendrite.yaml"] == "" {
		return []string{"k8s: no ConfigMap dendrite-config with dendrite.yaml"}
	}
	var shards int
	for _, comp := range config.Components {
		kind := "Deployment"
		if comp == "roomserver" {
			kind = "StatefulSet"
		}
		w := findObject(objs, kind, comp)
		if w == nil {
			p = append(p, fmt.Sprintf("k8s: no %s %s", kind, comp))
			continue
		}
		where := fmt.Sprintf("k8s %s %s", kind, comp)
		if len(w.Spec.Template.Spec.Containers) != 1 {
			p = append(p, where+": want exactly one container")
			continue
		}
		c := &w.Spec.Template.Spec.Containers[0]
		if len(c.Command) != 0 {
			p = append(p, where+": sets command, which replaces the image's ENTRYPOINT; use args")
		}
		shard := ""
		if comp == "roomserver" {
			shard = "$(POD_INDEX)"
			ok := false
			for _, e := range c.Env {
				ok = ok || (e.Name == "POD_INDEX" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == podIndexField)
			}
			if !ok {
				p = append(p, where+": POD_INDEX must come from the "+podIndexField+" downward API field")
			}
			if w.Spec.Replicas != nil {
				shards = *w.Spec.Replicas
			}
			svc := findObject(objs, "Service", w.Spec.ServiceName)
			if w.Spec.ServiceName != "roomserver" || svc == nil || svc.Spec.ClusterIP != "None" {
				p = append(p, where+": serviceName must be the headless Service roomserver")
			}
		}
		p = append(p, checkArgs(where, c.Args, comp, shard)...)

		cfg, err := loadStrict([]byte(cm.Data["dendrite.yaml"]), k8sEnv(c))
		if err != nil {
			p = append(p, fmt.Sprintf("%s: config: %v", where, err))
			continue
		}
		for _, e := range checkPolylith(cfg) {
			p = append(p, where+": "+e)
		}
		internal := listenPort(internalAPI(cfg, comp).Listen)
		for name, probe := range map[string]struct {
			probe *k8sProbe
			path  string
		}{"liveness": {c.LivenessProbe, "/health"}, "readiness": {c.ReadinessProbe, "/ready"}} {
			if probe.probe == nil || probe.probe.HTTPGet == nil || probe.probe.HTTPGet.Path != probe.path ||
				containerPort(c, probe.probe.HTTPGet.Port) != internal {
				p = append(p, fmt.Sprintf("%s: %s probe must GET %s on the internal port %d", where, name, probe.path, internal))
			}
		}
		if svc := findObject(objs, "Service", comp); svc == nil {
			p = append(p, fmt.Sprintf("k8s: no Service %s", comp))
		} else {
			var sel map[string]string
			_ = svc.Spec.Selector.Decode(&sel)
			for k, v := range sel {
				if w.Spec.Template.Metadata.Labels[k] != v {
					p = append(p, fmt.Sprintf("k8s Service %s: selector %s=%s matches no pod of %s", comp, k, v, comp))
				}
			}
			ports := map[int]bool{}
			for _, sp := range svc.Spec.Ports {
				if containerPort(c, sp.TargetPort) == sp.Port {
					ports[sp.Port] = true
				}
			}
			want := []int{internal}
			switch comp {
			case "clientapi":
				want = append(want, listenPort(cfg.ClientAPI.Listen))
			case "syncapi":
				want = append(want, listenPort(cfg.SyncAPI.Listen))
			case "federationapi":
				want = append(want, listenPort(cfg.FederationAPI.Listen))
			}
			for _, port := range want {
				if !ports[port] {
					p = append(p, fmt.Sprintf("k8s Service %s: does not expose port %d on the same container port", comp, port))
				}
			}
		}
		if comp == "roomserver" {
			if cfg.RoomServer.Shards != shards {
				p = append(p, fmt.Sprintf("%s: replicas %d but room_server.shards %d", where, shards, cfg.RoomServer.Shards))
			}
			if u := cfg.RoomServer.ShardURL(1); u != fmt.Sprintf("http://roomserver-1.roomserver:%d", internal) {
				p = append(p, fmt.Sprintf("%s: shard 1 is reached at %s, not at its pod in the headless Service", where, u))
			}
		}
	}
	for _, o := range objs {
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" {
			continue
		}
		ps := o.Spec.Template.Spec.SecurityContext
		for _, c := range o.Spec.Template.Spec.Containers {
			where := fmt.Sprintf("k8s %s %s container %s", o.Kind, o.Metadata.Name, c.Name)
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["cpu"] == "" || c.Resources.Limits["memory"] == "" {
				p = append(p, where+": needs cpu and memory requests and limits")
			}
			cs := c.SecurityContext
			nonRoot := (ps != nil && ps.RunAsNonRoot != nil && *ps.RunAsNonRoot) || (cs != nil && cs.RunAsNonRoot != nil && *cs.RunAsNonRoot)
			if !nonRoot {
				p = append(p, where+": must set runAsNonRoot")
			}
			if cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation {
				p = append(p, where+": must set allowPrivilegeEscalation: false")
			}
		}
	}
	sort.Strings(p)
	return p
}

func TestK8sManifestsFollowTheProcessContract(t *testing.T) {
	for _, problem := range checkK8s(loadK8s(t).objs) {
		t.Error(problem)
	}
}

// TestK8sCheckCanFail breaks the manifests in the ways the check must catch.
func TestK8sCheckCanFail(t *testing.T) {
	container := func(objs []*k8sObject, kind, name string) *k8sContainer {
		return &findObject(objs, kind, name).Spec.Template.Spec.Containers[0]
	}
	cases := map[string]func(objs []*k8sObject){
		"liveness on the client port": func(objs []*k8sObject) {
			container(objs, "Deployment", "clientapi").LivenessProbe.HTTPGet.Port = yaml.Node{Kind: yaml.ScalarNode, Value: "client"}
		},
		"readiness path": func(objs []*k8sObject) {
			container(objs, "Deployment", "userapi").ReadinessProbe.HTTPGet.Path = "/health"
		},
		"no shard flag": func(objs []*k8sObject) {
			c := container(objs, "StatefulSet", "roomserver")
			c.Args = c.Args[:len(c.Args)-2]
		},
		"replicas != shards": func(objs []*k8sObject) {
			three := 3
			findObject(objs, "StatefulSet", "roomserver").Spec.Replicas = &three
		},
		"roomserver as Deployment": func(objs []*k8sObject) { findObject(objs, "StatefulSet", "roomserver").Kind = "Deployment" },
		"root": func(objs []*k8sObject) {
			findObject(objs, "Deployment", "syncapi").Spec.Template.Spec.SecurityContext.RunAsNonRoot = nil
		},
		"no DSN": func(objs []*k8sObject) {
			c := container(objs, "Deployment", "syncapi")
			c.Env = slices.DeleteFunc(c.Env, func(e k8sEnvVar) bool { return e.Name == "DENDRITE_GLOBAL_DATABASE_CONNECTION_STRING" })
		},
	}
	for name, breakIt := range cases {
		objs := loadK8s(t).objs
		breakIt(objs)
		problems := checkK8s(objs)
		if len(problems) == 0 {
			t.Errorf("%s: the k8s check found nothing wrong", name)
		}
		t.Logf("%s: %q", name, problems)
	}
}

// TestKeygenWritesALoadableKey runs docker/keygen.sh (the compose keygen service) and loads
// its key the way Dendrite does.
func TestKeygenWritesALoadableKey(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, tool := range []string{"base64", "head", "tr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("no " + tool)
		}
	}
	key := filepath.Join(t.TempDir(), "keys", "matrix_key.pem")
	cmd := exec.Command(sh, keygenScript, key)
	cmd.Env = append(os.Environ(), "KEY_OWNER=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keygen.sh: %v\n%s", err, out)
	}
	before := read(t, key)
	id, priv, err := config.LoadOrGenerateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(t, key), before) || !strings.Contains(string(before), "Key-ID: "+string(id)) {
		t.Fatalf("key %s was not read from the generated file", id)
	}
	if !regexp.MustCompile(`^ed25519:[A-Za-z0-9]{6}$`).MatchString(string(id)) || len(priv) == 0 {
		t.Fatalf("bad key ID %q", id)
	}
	// A second run (a restarted compose project) keeps the key.
	again := exec.Command(sh, keygenScript, key)
	again.Env = cmd.Env
	if out, err := again.CombinedOutput(); err != nil || !bytes.Equal(read(t, key), before) {
		t.Fatalf("second run replaced the key or failed: %v\n%s", err, out)
	}
}

// --- Kubernetes: secrets, image, config rollout ----------------------------------------

// documentedSecretKeys are the keys of the Secret dendrite-secrets that docs/deploy.md tells
// the operator to create (its `kubectl create secret generic dendrite-secrets` command).
func documentedSecretKeys(t *testing.T) map[string]bool {
	t.Helper()
	doc := string(read(t, deployDoc))
	loc := regexp.MustCompile(`kubectl (-n \S+ )?create secret generic dendrite-secrets`).FindStringIndex(doc)
	if loc == nil {
		t.Fatalf("%s does not show how to create the Secret dendrite-secrets", deployDoc)
	}
	cmd := doc[loc[0]:]
	if end := strings.Index(cmd, "\n\n"); end >= 0 {
		cmd = cmd[:end]
	}
	keys := map[string]bool{}
	for _, m := range regexp.MustCompile(`--from-literal=([a-z-]+)=`).FindAllStringSubmatch(cmd, -1) {
		keys[m[1]] = true
	}
	return keys
}

// operatorSecret is what the operator puts in dendrite-secrets (as docs/deploy.md says).
var operatorSecret = map[string]string{
	"postgres-password":          "postgresPassword0123456789",
	"database-connection-string": "postgres://dendrite:postgresPassword0123456789@postgres:5432/dendrite?sslmode=disable",
	"registration-shared-secret": "registrationSecret0123456789",
}

// placeholder matches the values of the Secret these manifests used to ship.
var placeholder = regexp.MustCompile(`(?i)change-?me`)

// checkK8sDelivery checks what kustomize does with the manifests: no Secret shipped (the
// operator creates it as documented), the config files as hash-suffixed generated
// ConfigMaps referenced by every workload, and one image setting for every Dendrite
// container.
func checkK8sDelivery(m k8sManifests, documented map[string]bool, nginxConf string) []string {
	var p []string
	for _, o := range m.objs {
		if o.Kind == "Secret" {
			p = append(p, fmt.Sprintf("k8s: %s ships Secret %s: secrets must be created by the operator (docs/deploy.md)", o.file, o.Metadata.Name))
		}
		for k, v := range o.StringData {
			if placeholder.MatchString(v) {
				p = append(p, fmt.Sprintf("k8s: %s: %s holds a placeholder secret", o.file, k))
			}
		}
	}
	if m.kust.GeneratorOptions != nil && m.kust.GeneratorOptions.DisableNameSuffixHash {
		p = append(p, "kustomization.yaml: generatorOptions disables the name hash, so config changes do not roll the workloads")
	}
	for _, name := range []string{"dendrite-config", "dendrite-proxy"} {
		cm := findObject(m.objs, "ConfigMap", name)
		if cm == nil || !cm.generated {
			p = append(p, fmt.Sprintf("kustomization.yaml: ConfigMap %s must come from configMapGenerator, so a change rolls the workloads", name))
		}
	}
	for _, g := range m.kust.ConfigMapGenerator {
		if g.Options != nil && g.Options.DisableNameSuffixHash {
			p = append(p, fmt.Sprintf("kustomization.yaml: generator %s disables the name hash, so config changes do not roll the workloads", g.Name))
		}
	}
	if px := findObject(m.objs, "ConfigMap", "dendrite-proxy"); px != nil && px.Data["nginx.conf"] != nginxConf {
		p = append(p, "k8s: ConfigMap dendrite-proxy's nginx.conf (docker/k8s/nginx.conf) is not a copy of docker/nginx.conf")
	}
	dendriteImages := 0
	for _, o := range m.objs {
		for _, v := range o.Spec.Template.Spec.Volumes {
			if v.ConfigMap == nil {
				continue
			}
			if cm := findObject(m.objs, "ConfigMap", v.ConfigMap.Name); cm == nil || !cm.generated {
				p = append(p, fmt.Sprintf("k8s %s %s: mounts ConfigMap %s, which no configMapGenerator makes", o.Kind, o.Metadata.Name, v.ConfigMap.Name))
			}
		}
		for _, c := range o.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "dendrite-secrets" && !documented[e.ValueFrom.SecretKeyRef.Key] {
					p = append(p, fmt.Sprintf("k8s %s %s: uses key %s of dendrite-secrets, which docs/deploy.md does not tell the operator to create", o.Kind, o.Metadata.Name, e.ValueFrom.SecretKeyRef.Key))
				}
			}
			if slices.Contains(c.Args, "component") {
				dendriteImages++
				if c.Image != "dendrite" {
					p = append(p, fmt.Sprintf("k8s %s %s: image %q, want the bare name dendrite that kustomization.yaml's images: entry replaces", o.Kind, o.Metadata.Name, c.Image))
				}
			}
		}
	}
	if dendriteImages == 0 {
		p = append(p, "k8s: no Dendrite container")
	}
	var img []string
	for _, i := range m.kust.Images {
		if i.Name == "dendrite" {
			img = append(img, i.NewName+":"+i.NewTag+i.Digest)
			if i.NewName == "" || (i.NewTag == "" && i.Digest == "") || i.NewTag == "latest" {
				p = append(p, "kustomization.yaml: the dendrite image needs newName and a newTag (not latest) or digest")
			}
		}
	}
	if len(img) != 1 {
		p = append(p, fmt.Sprintf("kustomization.yaml: want one images: entry for dendrite, have %v", img))
	}
	sort.Strings(p)
	return p
}

func TestK8sShipsNoSecretAndRollsOnConfigChange(t *testing.T) {
	for _, problem := range checkK8sDelivery(loadK8s(t), documentedSecretKeys(t), string(read(t, nginxFile))) {
		t.Error(problem)
	}
}

// TestK8sDeliveryCheckCanFail breaks the kustomization in the ways the check must catch.
func TestK8sDeliveryCheckCanFail(t *testing.T) {
	nginxConf := string(read(t, nginxFile))
	documented := documentedSecretKeys(t)
	cases := map[string]func(m *k8sManifests){
		"placeholder Secret": func(m *k8sManifests) {
			s := &k8sObject{file: "secret.yaml", Kind: "Secret", StringData: map[string]string{"registration-shared-secret": "CHANGE-ME"}}
			s.Metadata.Name = "dendrite-secrets"
			m.objs = append(m.objs, s)
		},
		"plain ConfigMap": func(m *k8sManifests) { findObject(m.objs, "ConfigMap", "dendrite-config").generated = false },
		"no hash": func(m *k8sManifests) {
			m.kust.ConfigMapGenerator[0].Options = &struct {
				DisableNameSuffixHash bool `yaml:"disableNameSuffixHash"`
			}{true}
		},
		"proxy config drift": func(m *k8sManifests) {
			findObject(m.objs, "ConfigMap", "dendrite-proxy").Data["nginx.conf"] += "# drift\n"
		},
		"latest":           func(m *k8sManifests) { m.kust.Images[0].NewTag = "latest" },
		"no image setting": func(m *k8sManifests) { m.kust.Images = nil },
		"image in a workload": func(m *k8sManifests) {
			findObject(m.objs, "Deployment", "userapi").Spec.Template.Spec.Containers[0].Image = "dendrite:latest"
		},
		"undocumented secret key": func(m *k8sManifests) {
			c := &findObject(m.objs, "Deployment", "clientapi").Spec.Template.Spec.Containers[0]
			c.Env[len(c.Env)-1].ValueFrom.SecretKeyRef.Key = "admin-password"
		},
	}
	for name, breakIt := range cases {
		m := loadK8s(t)
		breakIt(&m)
		problems := checkK8sDelivery(m, documented, nginxConf)
		if len(problems) == 0 {
			t.Errorf("%s: the delivery check found nothing wrong", name)
		}
		t.Logf("%s: %q", name, problems)
	}
}

// cpuCount is a CPU quantity ("1", "1.5", "500m") rounded up to whole CPUs.
func cpuCount(q string) int {
	milli := 0.0
	if v, ok := strings.CutSuffix(q, "m"); ok {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return -1
		}
		milli = n
	} else {
		n, err := strconv.ParseFloat(q, 64)
		if err != nil {
			return -1
		}
		milli = n * 1000
	}
	return int(math.Ceil(milli / 1000))
}

// proxyCPULimit is the proxy container's CPU limit in whole CPUs, which must be the same in
// compose and Kubernetes (nginx.conf is shared).
func proxyCPULimit(t *testing.T) int {
	t.Helper()
	px := findObject(loadK8s(t).objs, "Deployment", "proxy")
	if px == nil || len(px.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("k8s: no proxy Deployment with one container")
	}
	k8s := cpuCount(px.Spec.Template.Spec.Containers[0].Resources.Limits["cpu"])
	compose := cpuCount(strconv.FormatFloat(float64(loadCompose(t).Services["proxy"].CPUs), 'f', -1, 32))
	if k8s < 1 || k8s != compose {
		t.Fatalf("the proxy's CPU limit is %d in Kubernetes and %d in compose; nginx.conf serves both", k8s, compose)
	}
	return k8s
}

// --- Kubernetes: network policy -------------------------------------------------------

// selects applies a label selector to labels (an empty selector matches everything; an
// invalid one nothing).
func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	ls, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && ls.Matches(labels.Set(l))
}

// pod is a workload's pod template: its labels and its container ports.
type pod struct {
	workload string
	labels   map[string]string
	ports    []k8sPort
}

// intruder is any other pod of the cluster (same namespace).
var intruder = pod{workload: "another pod", labels: map[string]string{"app": "other"}}

func workloadPods(objs []*k8sObject) []pod {
	var out []pod
	for _, o := range objs {
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" {
			continue
		}
		p := pod{workload: o.Kind + " " + o.Metadata.Name, labels: o.Spec.Template.Metadata.Labels}
		for _, c := range o.Spec.Template.Spec.Containers {
			p.ports = append(p.ports, c.Ports...)
		}
		out = append(out, p)
	}
	return out
}

// allowed applies the NetworkPolicies as a policy-enforcing CNI does: traffic to dst is
// allowed unless a policy selects dst for Ingress, and then only if one of those policies
// has a rule whose peers include src (same namespace) and whose ports include port.
func allowed(policies []*networkingv1.NetworkPolicy, src, dst pod, port k8sPort) bool {
	isolated := false
	for _, np := range policies {
		if !selects(&np.Spec.PodSelector, dst.labels) || (len(np.Spec.PolicyTypes) > 0 && !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)) {
			continue
		}
		isolated = true
		for _, rule := range np.Spec.Ingress {
			peer := len(rule.From) == 0
			for _, f := range rule.From {
				// A namespaceSelector or ipBlock peer admits pods of other namespaces or
				// addresses, never a same-namespace pod by itself.
				if f.PodSelector != nil && f.NamespaceSelector == nil && f.IPBlock == nil && selects(f.PodSelector, src.labels) {
					peer = true
				}
			}
			portOK := len(rule.Ports) == 0
			for _, rp := range rule.Ports {
				if rp.Port == nil || rp.Port.String() == port.Name || rp.Port.String() == strconv.Itoa(port.ContainerPort) {
					portOK = true
				}
			}
			if peer && portOK {
				return true
			}
		}
	}
	return !isolated
}

// homeserverProcess tells the Dendrite processes' pods (one per config.Components entry)
// from the proxy, the backing services and any other pod.
func homeserverProcess(p pod) bool {
	return slices.Contains(config.Components, p.labels["app.kubernetes.io/name"]) && p.labels["app.kubernetes.io/component"] != ""
}

// mayReach is the intended reachability: the proxy's HTTP port from anywhere; a process's
// public listener from the proxy; internal APIs (with /metrics and /debug/pprof),
// PostgreSQL and the Kafka brokers from the homeserver's processes; the brokers also from
// other Kafka nodes and the controller port only from them.
func mayReach(src, dst pod, port k8sPort) bool {
	name := dst.labels["app.kubernetes.io/name"]
	switch {
	case name == "proxy":
		return port.Name == "http"
	case homeserverProcess(dst) && port.Name == "internal":
		return homeserverProcess(src)
	case homeserverProcess(dst):
		return src.labels["app.kubernetes.io/name"] == "proxy"
	case name == "postgres":
		return homeserverProcess(src)
	case name == "kafka" && port.Name == "controller":
		return src.labels["app.kubernetes.io/name"] == "kafka"
	case name == "kafka":
		return homeserverProcess(src) || src.labels["app.kubernetes.io/name"] == "kafka"
	}
	return false
}

// checkNetworkPolicies checks every port of every pod against mayReach, from every pod and
// from an intruder, and that every policy selects some pod.
func checkNetworkPolicies(objs []*k8sObject) []string {
	var p []string
	var policies []*networkingv1.NetworkPolicy
	for _, o := range objs {
		if o.policy != nil {
			policies = append(policies, o.policy)
		}
	}
	pods := workloadPods(objs)
	for _, np := range policies {
		selected := false
		for _, dst := range pods {
			selected = selected || selects(&np.Spec.PodSelector, dst.labels)
		}
		if !selected {
			p = append(p, fmt.Sprintf("k8s NetworkPolicy %s: selects no pod", np.Name))
		}
	}
	processes := 0
	for _, dst := range pods {
		if homeserverProcess(dst) {
			processes++
		}
		if len(dst.ports) == 0 {
			p = append(p, dst.workload+": declares no container port, so no policy can be checked against it")
		}
		for _, port := range dst.ports {
			for _, src := range append(slices.Clone(pods), intruder) {
				if got, want := allowed(policies, src, dst, port), mayReach(src, dst, port); got != want {
					verb := "can reach"
					if !got {
						verb = "cannot reach"
					}
					p = append(p, fmt.Sprintf("k8s NetworkPolicies: %s %s %s port %s (%d)", src.workload, verb, dst.workload, port.Name, port.ContainerPort))
				}
			}
		}
	}
	if processes != len(config.Components) {
		p = append(p, fmt.Sprintf("k8s: %d workloads are homeserver processes, want one per component (%d)", processes, len(config.Components)))
	}
	sort.Strings(p)
	return p
}

// TestK8sNetworkPoliciesIsolateInternalPorts checks that only the homeserver's processes
// reach the internal APIs (and /debug/pprof), PostgreSQL and Kafka, and only the proxy the
// public listeners.
func TestK8sNetworkPoliciesIsolateInternalPorts(t *testing.T) {
	for _, problem := range checkNetworkPolicies(loadK8s(t).objs) {
		t.Error(problem)
	}
}

// TestNetworkPolicyCheckCanFail breaks the policies in the ways the check must catch.
func TestNetworkPolicyCheckCanFail(t *testing.T) {
	policy := func(objs []*k8sObject, name string) *networkingv1.NetworkPolicy {
		return findObject(objs, "NetworkPolicy", name).policy
	}
	cases := map[string]func(objs []*k8sObject){
		"no policy for userapi": func(objs []*k8sObject) { findObject(objs, "NetworkPolicy", "userapi").policy = nil },
		"internal port open to all": func(objs []*k8sObject) {
			policy(objs, "roomserver").Spec.Ingress[0].From = nil
		},
		"postgres open to all": func(objs []*k8sObject) {
			policy(objs, "postgres").Spec.Ingress[0].From = nil
		},
		"kafka ports open": func(objs []*k8sObject) { policy(objs, "kafka").Spec.Ingress[0].Ports = nil },
		"proxy cannot reach clientapi": func(objs []*k8sObject) {
			policy(objs, "clientapi").Spec.Ingress = policy(objs, "clientapi").Spec.Ingress[:1]
		},
		"selector matches nothing": func(objs []*k8sObject) {
			policy(objs, "syncapi").Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] = "sync-api"
		},
		"process unlabelled": func(objs []*k8sObject) {
			delete(findObject(objs, "Deployment", "eduserver").Spec.Template.Metadata.Labels, "dendrite-homeserver")
		},
	}
	for name, breakIt := range cases {
		objs := loadK8s(t).objs
		breakIt(objs)
		problems := checkNetworkPolicies(objs)
		if len(problems) == 0 {
			t.Errorf("%s: the network policy check found nothing wrong", name)
		}
		t.Logf("%s: %q", name, problems)
	}
}

// checkKafka checks the shipped Kafka's KRaft identity: node N is pod kafka-N (pod index),
// advertises its own pod DNS name, and the controller quorum lists every replica by pod DNS
// name, so that scaling the StatefulSet takes only replicas, voters and replication factors.
func checkKafka(objs []*k8sObject) []string {
	k := findObject(objs, "StatefulSet", "kafka")
	if k == nil || len(k.Spec.Template.Spec.Containers) != 1 || k.Spec.Replicas == nil {
		return []string{"k8s: no kafka StatefulSet with one container and replicas"}
	}
	svc := k.Spec.ServiceName
	env := map[string]k8sEnvVar{}
	for _, e := range k.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e
	}
	var p []string
	if e := env["KAFKA_NODE_ID"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != podIndexField {
		p = append(p, "k8s kafka: KAFKA_NODE_ID must come from the pod index ("+podIndexField+")")
	}
	if e := env["POD_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		p = append(p, "k8s kafka: POD_NAME must come from metadata.name")
	}
	if got, want := env["KAFKA_ADVERTISED_LISTENERS"].Value, "PLAINTEXT://$(POD_NAME)."+svc+":9092"; got != want {
		p = append(p, fmt.Sprintf("k8s kafka: advertised listeners %q, want %q", got, want))
	}
	var voters []string
	for i := 0; i < *k.Spec.Replicas; i++ {
		voters = append(voters, fmt.Sprintf("%d@kafka-%d.%s:9093", i, i, svc))
	}
	if got := env["KAFKA_CONTROLLER_QUORUM_VOTERS"].Value; got != strings.Join(voters, ",") {
		p = append(p, fmt.Sprintf("k8s kafka: controller quorum voters %q, want %q (one per replica, by pod DNS name)", got, strings.Join(voters, ",")))
	}
	return p
}

func TestK8sKafkaQuorumFromPodNames(t *testing.T) {
	objs := loadK8s(t).objs
	for _, problem := range checkKafka(objs) {
		t.Error(problem)
	}
	three := 3
	findObject(objs, "StatefulSet", "kafka").Spec.Replicas = &three
	if len(checkKafka(objs)) == 0 {
		t.Error("three replicas with a one-voter quorum passed")
	}
}

// --- docs and files derived from the code ---------------------------------------------

// processPorts is each component's internal port and public port (0 for none), from the
// config's defaults: a section with an internal_api belongs to the component whose
// InternalAPIOf it is, and its listen key, if it has one, is its public listener.
func processPorts(t *testing.T) map[string][2]int {
	t.Helper()
	cfg := config.Defaults()
	out := map[string][2]int{}
	v := reflect.ValueOf(cfg).Elem()
	for i := 0; i < v.NumField(); i++ {
		sec := v.Field(i)
		if sec.Kind() != reflect.Struct {
			continue
		}
		ia := sec.FieldByName("InternalAPI")
		if !ia.IsValid() || ia.Type() != reflect.TypeOf(config.InternalAPI{}) {
			continue
		}
		ptr := ia.Addr().Interface().(*config.InternalAPI)
		comp := ""
		for _, c := range config.Components {
			if ptr == cfg.InternalAPIOf(c) || (c == "roomserver" && ptr == &cfg.RoomServer.InternalAPI) {
				comp = c
			}
		}
		if comp == "" {
			t.Fatalf("config section %s has an internal_api but is no component of config.Components", v.Type().Field(i).Name)
		}
		ports := [2]int{listenPort(ptr.Listen), 0}
		if l := sec.FieldByName("Listen"); l.IsValid() && l.Kind() == reflect.String {
			ports[1] = listenPort(l.String())
		}
		out[comp] = ports
	}
	if len(out) != len(config.Components) {
		t.Fatalf("found the ports of %d components, want %d", len(out), len(config.Components))
	}
	return out
}

// monolithPort is the port the image's default arguments (CMD) serve the monolith on.
func monolithPort(t *testing.T) int {
	t.Helper()
	for _, line := range strings.Split(string(read(t, dockerfile)), "\n") {
		if rest, ok := strings.CutPrefix(line, "CMD "); ok {
			var args []string
			if err := yaml.Unmarshal([]byte(rest), &args); err == nil {
				if v, ok := flagValue(args, "http-bind-address"); ok {
					return listenPort(v)
				}
			}
		}
	}
	t.Fatal("Dockerfile: CMD names no --http-bind-address")
	return 0
}

// docFiles are the docs that describe the processes, with the text of each.
func docFiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{"../README.md": "", "../cmd/dendrite/main.go": ""}
	mds, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range mds {
		out[f] = ""
	}
	for f := range out {
		out[f] = string(read(t, f))
	}
	return out
}

var (
	portRange = regexp.MustCompile("(77\\d\\d)`?-`?:?(77\\d\\d)")
	nameList  = regexp.MustCompile(`--name <?([a-z]+(?:\|[a-z]+)+)>?`)
	ruleRow   = regexp.MustCompile("(?m)^\\| `(/_[^`]+)` \\| ([a-z]+) \\|$")
)

// checkDocs checks the docs against the components, their ports (ports) and the proxy's
// routing table.
func checkDocs(docs map[string]string, ports map[string][2]int, proxyWaitsFor []string) []string {
	var p []string
	lo, hi := 1<<16, 0
	for _, pp := range ports {
		lo, hi = min(lo, pp[0]), max(hi, pp[0])
	}
	for f, text := range docs {
		for _, m := range portRange.FindAllStringSubmatch(text, -1) {
			if m[1] != strconv.Itoa(lo) || m[2] != strconv.Itoa(hi) {
				p = append(p, fmt.Sprintf("%s: internal ports %s-%s, but they are %d-%d", f, m[1], m[2], lo, hi))
			}
		}
		for _, m := range nameList.FindAllStringSubmatch(text, -1) {
			if got := strings.Split(m[1], "|"); !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(config.Components))) {
				p = append(p, fmt.Sprintf("%s: --name lists %v, want every component %v", f, got, config.Components))
			}
		}
	}
	for _, c := range config.Components {
		if !strings.Contains(docs["../README.md"], "`"+c+"`") {
			p = append(p, "README.md: does not name the component "+c)
		}
	}
	var rows []proxyroute.Rule
	for _, m := range ruleRow.FindAllStringSubmatch(docs["../docs/polylith.md"], -1) {
		rows = append(rows, proxyroute.Rule{Pattern: m[1], Process: m[2]})
	}
	if !slices.Equal(rows, proxyroute.Rules) {
		p = append(p, fmt.Sprintf("docs/polylith.md: the proxy table is %v, want proxyroute.Rules %v", rows, proxyroute.Rules))
	}
	p = append(p, checkProcessMap(docs[deployDoc], ports)...)
	deploy := docs[deployDoc]
	if i := strings.Index(deploy, "the proxy waits for"); i < 0 {
		p = append(p, "docs/deploy.md: does not say what the proxy waits for")
	} else {
		sentence, _, _ := strings.Cut(deploy[i:], "(")
		for _, c := range append(slices.Clone(config.Components), "kafka", "postgres") {
			if mentioned := regexp.MustCompile(`\b` + c + `\b`).MatchString(sentence); mentioned != slices.Contains(proxyWaitsFor, c) {
				p = append(p, fmt.Sprintf("docs/deploy.md: %q: the proxy's depends_on is %v", strings.TrimSpace(sentence), proxyWaitsFor))
				break
			}
		}
	}
	sort.Strings(p)
	return p
}

// checkProcessMap checks docs/deploy.md's process map: one row group per component with
// exactly its internal and public ports.
func checkProcessMap(deploy string, ports map[string][2]int) []string {
	var p []string
	i := strings.Index(deploy, "## Process map")
	if i < 0 {
		return []string{"docs/deploy.md: no process map"}
	}
	section := deploy[i+len("## Process map"):]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	got := map[string][]int{}
	name := ""
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") || strings.TrimSpace(cells[1]) == "process" {
			continue
		}
		if n := strings.Fields(cells[1]); len(n) > 0 {
			name = n[0]
		}
		if port, err := strconv.Atoi(strings.TrimSpace(cells[3])); err == nil {
			got[name] = append(got[name], port)
		}
	}
	for _, c := range config.Components {
		want := []int{ports[c][0]}
		if ports[c][1] != 0 {
			want = append(want, ports[c][1])
		}
		if !slices.Equal(slices.Sorted(slices.Values(got[c])), slices.Sorted(slices.Values(want))) {
			p = append(p, fmt.Sprintf("docs/deploy.md: the process map gives %s ports %v, want %v", c, got[c], want))
		}
	}
	for n := range got {
		if !slices.Contains(config.Components, n) && n != "proxy" {
			p = append(p, "docs/deploy.md: the process map lists "+n+", which is no component")
		}
	}
	return p
}

// TestDocsMatchTheCode checks the docs against the components, ports and proxy routes the
// code defines, so that they cannot drift.
func TestDocsMatchTheCode(t *testing.T) {
	ports := processPorts(t)
	waits := slices.Sorted(maps.Keys(loadCompose(t).Services["proxy"].DependsOn))
	docs := docFiles(t)
	for _, problem := range checkDocs(docs, ports, waits) {
		t.Error(problem)
	}
	for name, mutate := range map[string]func(map[string]string){
		"old port range": func(d map[string]string) { d[deployDoc] += "\ninternal ports 7770-7773\n" },
		"usage without a component": func(d map[string]string) {
			d["../cmd/dendrite/main.go"] += "\n// dendrite component --name clientapi|roomserver\n"
		},
		"README without federationsender": func(d map[string]string) {
			d["../README.md"] = strings.ReplaceAll(d["../README.md"], "`federationsender`", "federationsender")
		},
		"proxy table without key": func(d map[string]string) {
			d["../docs/polylith.md"] = strings.Replace(d["../docs/polylith.md"], "| `/_matrix/key/*` | federationapi |\n", "", 1)
		},
		"process map without a port": func(d map[string]string) {
			d[deployDoc] = strings.Replace(d[deployDoc], "| | | 7777 |", "| | | 7779 |", 1)
		},
		"proxy waits for less": func(d map[string]string) {
			d[deployDoc] = strings.Replace(d[deployDoc], "the proxy waits for clientapi,\nsyncapi, federationapi, mediaapi, pushserver and searchapi", "the proxy waits for clientapi and syncapi", 1)
		},
	} {
		broken := maps.Clone(docs)
		mutate(broken)
		if maps.Equal(broken, docs) {
			t.Errorf("%s: mutation did not apply", name)
		} else if len(checkDocs(broken, ports, waits)) == 0 {
			t.Errorf("%s: the docs check found nothing wrong", name)
		}
	}
}

// TestImageFilesMatchTheCode checks the Dockerfile's EXPOSE against the ports the processes
// listen on, its base images for digests, and the build context's exclusions against
// .gitignore.
func TestImageFilesMatchTheCode(t *testing.T) {
	want := []int{monolithPort(t)}
	for _, pp := range processPorts(t) {
		want = append(want, pp[0])
		if pp[1] != 0 {
			want = append(want, pp[1])
		}
	}
	slices.Sort(want)
	var exposed []int
	digest := regexp.MustCompile(`@sha256:[0-9a-f]{64}(\s|$)`)
	for _, line := range strings.Split(string(read(t, dockerfile)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "EXPOSE":
			for _, port := range f[1:] {
				n, err := strconv.Atoi(strings.TrimSuffix(port, "/tcp"))
				if err != nil {
					t.Errorf("Dockerfile: EXPOSE %s: list single ports", port)
				}
				exposed = append(exposed, n)
			}
		case "FROM":
			if len(f) < 2 || !digest.MatchString(f[1]+" ") {
				t.Errorf("Dockerfile: %s: pin the base image by digest", line)
			}
		}
	}
	slices.Sort(exposed)
	if !slices.Equal(exposed, want) {
		t.Errorf("Dockerfile: EXPOSE %v, want every port the processes listen on %v", exposed, want)
	}
	ignored := map[string]bool{}
	for _, line := range strings.Split(string(read(t, "Dockerfile.dockerignore")), "\n") {
		ignored[strings.TrimSpace(line)] = true
	}
	for _, line := range strings.Split(string(read(t, "../.gitignore")), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		want := line
		if !strings.HasPrefix(line, "/") {
			want = "**/" + line
		}
		if !ignored[want] {
			t.Errorf("Dockerfile.dockerignore: lacks %s (.gitignore's %s)", want, line)
		}
	}
}

// TestAPIDecodingIsStrict shows that a misspelt field of a manifest fails the load instead
// of being dropped (a NetworkPolicy without its podSelector would select every pod).
func TestAPIDecodingIsStrict(t *testing.T) {
	for name, src := range map[string]string{
		"misspelt field": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  podSelecter: {}\n",
		"wrong type":     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: two\n",
		"unknown kind":   "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n",
	} {
		docs, err := yamlDocs([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeAPIObject(docs[0]); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	docs, err := yamlDocs([]byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec:\n  podSelector: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeAPIObject(docs[0]); err != nil {
		t.Errorf("a valid NetworkPolicy: %v", err)
	}
}
