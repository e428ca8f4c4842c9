package docker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

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

type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   yaml.Node         `yaml:"depends_on"`
	Ports       []string          `yaml:"ports"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

type compose struct {
	Services map[string]composeService `yaml:"services"`
}

// dependsOn is a service's depends_on as name -> condition (short form: service_started).
func (s composeService) dependsOn() map[string]string {
	out := map[string]string{}
	node := &s.DependsOn
	for node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	switch node.Kind {
	case yaml.SequenceNode:
		for _, n := range node.Content {
			out[n.Value] = "service_started"
		}
	case yaml.MappingNode:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := node.Decode(&m); err == nil {
			for k, v := range m {
				out[k] = v.Condition
			}
		}
	}
	return out
}

var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}`)

// env is the service's environment as KEY=VALUE, with ${VAR:-default} given its default.
func (s composeService) env() []string {
	var out []string
	for k, v := range s.Environment {
		out = append(out, k+"="+composeVar.ReplaceAllString(v, "$2"))
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
		deps := s.dependsOn()
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
	if pg, ok := c.Services["postgres"]; !ok || !strings.HasPrefix(pg.Image, "postgres:15") || pg.Healthcheck == nil || !slices.Contains(pg.Healthcheck.Test, "pg_isready") {
		p = append(p, "compose: no postgres:15 service with a pg_isready health check")
	}
	if px, ok := c.Services["proxy"]; !ok || !slices.Contains(px.Ports, fmt.Sprintf("%d:%d", proxyHTTPPort, proxyHTTPPort)) {
		p = append(p, fmt.Sprintf("compose: no proxy service published on host port %d", proxyHTTPPort))
	}
	sort.Strings(p)
	return p
}

func loadCompose(t *testing.T) compose {
	t.Helper()
	var c compose
	if err := yaml.Unmarshal(read(t, composeFile), &c); err != nil {
		t.Fatal(err)
	}
	return c
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
	upstream string // proxy_pass target host (an upstream name), or "" when it does not proxy
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

// nginxRouting is the parsed front proxy: its upstreams (name -> servers) and locations.
type nginxRouting struct {
	upstreams map[string][]string
	locations []location
	server    *directive
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
	r := &nginxRouting{upstreams: map[string][]string{}}
	for _, u := range find(https[0].children, "upstream") {
		for _, s := range find(u.children, "server") {
			r.upstreams[u.args[0]] = append(r.upstreams[u.args[0]], s.args[0])
		}
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
			l.upstream = u.Host
		}
		r.locations = append(r.locations, l)
	}
	return r, nil
}

// The routing contract of the front proxy: request path -> process.
var routes = map[string]string{
	"/_matrix/client/v3/sync":                                          "syncapi",
	"/_matrix/client/r0/sync":                                          "syncapi",
	"/_matrix/client/v3/rooms/!room:example.org/messages":              "syncapi",
	"/_matrix/client/r0/rooms/!room:example.org/messages":              "syncapi",
	"/_matrix/client/v3/rooms/!room:example.org/context/$event":        "syncapi",
	"/_matrix/client/r0/rooms/!room:example.org/context/$ab/cd+ef":     "syncapi", // room v3 event IDs
	"/_matrix/client/versions":                                         "clientapi",
	"/_matrix/client/v3/login":                                         "clientapi",
	"/_matrix/client/v3/register":                                      "clientapi",
	"/_matrix/client/v3/createRoom":                                    "clientapi",
	"/_matrix/client/v3/rooms/!room:example.org/send/m.room.message/1": "clientapi",
	"/_matrix/client/v3/rooms/!room:example.org/state":                 "clientapi",
	"/_matrix/client/v3/rooms/!room:example.org/messagesx":             "clientapi",
	"/_matrix/client/v3/rooms/!room:example.org/join":                  "clientapi",
	"/_matrix/client/v3/user/@alice:example.org/filter":                "clientapi",
	"/_matrix/client/v3/sync/extra":                                    "clientapi",
	"/_matrix/client/v3/syncx":                                         "clientapi",
	"/_synapse/admin/v1/register":                                      "clientapi",
	"/_matrix/federation/v1/version":                                   "federationapi",
	"/_matrix/federation/v1/send/1":                                    "federationapi",
	"/_matrix/key/v2/server":                                           "federationapi",
	"/_matrix/key/v2/query/example.org":                                "federationapi",
	"/":                                                                "",
	// Metrics and the profiler are served on internal listeners only, never through the
	// proxy (DESIGN 9).
	"/metrics":      "",
	"/debug/pprof/": "",
}

// checkNginx checks the routing contract, the upstream addresses (public listen ports of
// clientapi and syncapi in cfg, reached by service name) and the limits.
func checkNginx(src string, cfg *config.Dendrite) []string {
	r, err := parseRouting(src)
	if err != nil {
		return []string{"nginx.conf: " + err.Error()}
	}
	var p []string
	for path, want := range routes {
		got := ""
		if l := route(r.locations, path); l != nil {
			got = l.upstream
		}
		if got != want {
			p = append(p, fmt.Sprintf("nginx.conf: %s goes to %q, want %q", path, got, want))
		}
	}
	for name, listen := range map[string]string{"clientapi": cfg.ClientAPI.Listen, "syncapi": cfg.SyncAPI.Listen, "federationapi": cfg.FederationAPI.Listen} {
		if want := fmt.Sprintf("%s:%d", name, listenPort(listen)); !slices.Equal(r.upstreams[name], []string{want}) {
			p = append(p, fmt.Sprintf("nginx.conf: upstream %s is %v, want [%s]", name, r.upstreams[name], want))
		}
	}
	if l := find(r.server.children, "listen"); len(l) != 1 || l[0].args[0] != strconv.Itoa(proxyHTTPPort) {
		p = append(p, fmt.Sprintf("nginx.conf: the server must listen on %d", proxyHTTPPort))
	}
	if b := find(r.server.children, "client_max_body_size"); len(b) != 1 || nginxSize(b[0].args[0]) < cfg.ClientAPI.MaxBodyBytes {
		p = append(p, fmt.Sprintf("nginx.conf: client_max_body_size must allow client_api.max_body_bytes (%d)", cfg.ClientAPI.MaxBodyBytes))
	}
	sync := route(r.locations, "/_matrix/client/v3/sync")
	if sync == nil || len(find(sync.block.children, "proxy_read_timeout")) == 0 {
		p = append(p, "nginx.conf: the /sync location needs a long proxy_read_timeout for long-polls")
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
	sort.Strings(p)
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
	cfg, err := loadStrict(read(t, polylithFile), nil)
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

func TestNginxRoutesSyncPathsToSyncAPI(t *testing.T) {
	for _, problem := range checkNginx(string(read(t, nginxFile)), polylithConfig(t)) {
		t.Error(problem)
	}
}

// TestNginxCheckCanFail breaks the proxy config in the ways the check must catch.
func TestNginxCheckCanFail(t *testing.T) {
	src := string(read(t, nginxFile))
	cfg := polylithConfig(t)
	mutations := map[string]func(string) string{
		// A ^~ prefix stops nginx from trying the regex locations.
		"prefix wins over regexes": func(s string) string {
			return strings.Replace(s, "location /_matrix/client/ {", "location ^~ /_matrix/client/ {", 1)
		},
		"sync to clientapi": func(s string) string {
			return strings.Replace(s, "proxy_buffering off;\n            proxy_pass http://syncapi;", "proxy_buffering off;\n            proxy_pass http://clientapi;", 1)
		},
		"messages unrouted": func(s string) string { return strings.Replace(s, "/messages$", "/mesages$", 1) },
		"no _synapse":       func(s string) string { return strings.Replace(s, "location /_synapse/", "location /_synapsex/", 1) },
		"no federation": func(s string) string {
			return strings.Replace(s, "location /_matrix/federation/", "location /_matrix/federationx/", 1)
		},
		"wrong port": func(s string) string { return strings.Replace(s, "server syncapi:8073;", "server syncapi:7773;", 1) },
		"small bodies": func(s string) string {
			return strings.Replace(s, "client_max_body_size 10m;", "client_max_body_size 1m;", 1)
		},
		"path rewritten": func(s string) string {
			return strings.Replace(s, "location /_synapse/ {\n            proxy_pass http://clientapi;", "location /_synapse/ {\n            proxy_pass http://clientapi/;", 1)
		},
		"unbalanced": func(s string) string { return strings.Replace(s, "}", "", 1) },
		"metrics routed": func(s string) string {
			return strings.Replace(s, "location /_synapse/ {", "location /metrics {\n            proxy_pass http://clientapi;\n        }\n        location /_synapse/ {", 1)
		},
	}
	for name, mutate := range mutations {
		broken := mutate(src)
		if broken == src {
			t.Errorf("%s: mutation did not apply; update the test", name)
			continue
		}
		problems := checkNginx(broken, cfg)
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

type k8sContainer struct {
	Name    string    `yaml:"name"`
	Image   string    `yaml:"image"`
	Command []string  `yaml:"command"`
	Args    []string  `yaml:"args"`
	Ports   []k8sPort `yaml:"ports"`
	Env     []struct {
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
	} `yaml:"env"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *k8sSecurityContext `yaml:"securityContext"`
}

type k8sObject struct {
	file     string
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
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func loadK8s(t *testing.T) []*k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", k8sDir, err)
	}
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	var objs []*k8sObject
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			if err := yaml.Unmarshal(read(t, f), &kust); err != nil {
				t.Fatal(err)
			}
			continue
		}
		docs, err := yamlDocs(read(t, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, d := range docs {
			o := &k8sObject{file: f}
			if err := d.Decode(o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs = append(objs, o)
		}
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(kust.Resources, b) {
			t.Errorf("%s is not listed in kustomization.yaml", f)
		}
	}
	return objs
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
// values from the manifests' Secrets.
func k8sEnv(objs []*k8sObject, c *k8sContainer) []string {
	var out []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			out = append(out, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil:
			if s := findObject(objs, "Secret", e.ValueFrom.SecretKeyRef.Name); s != nil {
				out = append(out, e.Name+"="+s.StringData[e.ValueFrom.SecretKeyRef.Key])
			}
		}
	}
	return out
}

const podIndexField = "metadata.labels['apps.kubernetes.io/pod-index']"

// checkK8s checks the manifests against the process contract.
func checkK8s(objs []*k8sObject, nginxConf string) []string {
	var p []string
	cm := findObject(objs, "ConfigMap", "dendrite-config")
	if cm == nil || cm.Data["dendrite.yaml"] == "" {
		return []string{"k8s: no ConfigMap dendrite-config with dendrite.yaml"}
	}
	if px := findObject(objs, "ConfigMap", "dendrite-proxy"); px == nil || px.Data["nginx.conf"] != nginxConf {
		p = append(p, "k8s: ConfigMap dendrite-proxy's nginx.conf is not a copy of docker/nginx.conf")
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

		cfg, err := loadStrict([]byte(cm.Data["dendrite.yaml"]), k8sEnv(objs, c))
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
	for _, problem := range checkK8s(loadK8s(t), string(read(t, nginxFile))) {
		t.Error(problem)
	}
}

// TestK8sCheckCanFail breaks the manifests in the ways the check must catch.
func TestK8sCheckCanFail(t *testing.T) {
	nginxConf := string(read(t, nginxFile))
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
		"proxy config drift": func(objs []*k8sObject) {
			findObject(objs, "ConfigMap", "dendrite-proxy").Data["nginx.conf"] += "# drift\n"
		},
		"no DSN secret": func(objs []*k8sObject) { findObject(objs, "Secret", "dendrite-secrets").StringData = nil },
	}
	for name, breakIt := range cases {
		objs := loadK8s(t)
		breakIt(objs)
		problems := checkK8s(objs, nginxConf)
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
