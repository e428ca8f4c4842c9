package config

import (
	"crypto/subtle"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// AppServiceAPI configures application services (bridges and bots): their registration
// files, read at start-up by every process that needs them (clientapi, userapi, appservice),
// and the appservice component that sends them the events they are interested in.
type AppServiceAPI struct {
	Database    DatabaseOptions `yaml:"database"`
	InternalAPI InternalAPI     `yaml:"internal_api"`
	// ConfigFiles are the paths of the registration files, one YAML file per application
	// service as the spec's application service API describes it.
	ConfigFiles []string `yaml:"config_files"`
	// MinBackoff is the wait after a service's first failed transaction; every further
	// failure doubles it, up to MaxBackoff.
	MinBackoff Duration `yaml:"min_backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
	// RequestTimeout bounds each request to a service (transactions, user and alias
	// queries, third-party lookups).
	RequestTimeout Duration `yaml:"request_timeout"`
	// Registrations are the parsed and validated ConfigFiles, filled in by Verify.
	Registrations []*ApplicationService `yaml:"-"`
}

func defaultAppServiceAPI() AppServiceAPI {
	return AppServiceAPI{
		InternalAPI: InternalAPI{Listen: ":7780", Connect: "http://appservice:7780"},
		ConfigFiles: []string{}, MinBackoff: Duration(time.Second), MaxBackoff: Duration(5 * time.Minute),
		RequestTimeout: Duration(30 * time.Second),
	}
}

// ApplicationService is one registration file.
type ApplicationService struct {
	// ID identifies the service; unique among the registrations.
	ID string `yaml:"id"`
	// URL is where the homeserver reaches the service; empty (null in the file) for a
	// service that only uses the client API and receives nothing.
	URL string `yaml:"url"`
	// ASToken authenticates the service to the homeserver; HSToken the homeserver to the
	// service.
	ASToken string `yaml:"as_token"`
	HSToken string `yaml:"hs_token"`
	// SenderLocalpart is the localpart of the service's own user, created at start-up.
	SenderLocalpart string     `yaml:"sender_localpart"`
	Namespaces      Namespaces `yaml:"namespaces"`
	// RateLimited is false to exempt the service's requests from the client rate limits
	// (absent: true).
	RateLimited *bool `yaml:"rate_limited"`
	// Protocols are the third-party protocols the service provides.
	Protocols []string `yaml:"protocols"`
	// ReceiveEphemeral asks for typing notifications, receipts and presence in
	// transactions.
	ReceiveEphemeral bool `yaml:"receive_ephemeral"`

	// sender is @SenderLocalpart:server_name.
	sender string
}

// Namespaces are the users, room aliases and room IDs a service is interested in.
type Namespaces struct {
	Users   []Namespace `yaml:"users"`
	Aliases []Namespace `yaml:"aliases"`
	Rooms   []Namespace `yaml:"rooms"`
}

// Namespace is one regular expression of a namespace. It must match the whole identifier
// (it is anchored at both ends). An exclusive namespace is the service's alone: nobody else
// may register its users or create its aliases.
type Namespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`

	re *regexp.Regexp
}

// SenderUserID is the service's own user.
func (a *ApplicationService) SenderUserID() string {
	return a.sender
}

// IsRateLimited reports whether the client rate limits apply to the service's requests.
func (a *ApplicationService) IsRateLimited() bool {
	return a.RateLimited == nil || *a.RateLimited
}

// OwnsUserID reports whether userID is the service's sender or matches one of its users
// namespaces: the users the service may register and act as.
func (a *ApplicationService) OwnsUserID(userID string) bool {
	return userID == a.sender || matchAny(a.Namespaces.Users, userID, false)
}

// ExclusiveUserID reports whether userID is in one of the service's exclusive users
// namespaces.
func (a *ApplicationService) ExclusiveUserID(userID string) bool {
	return matchAny(a.Namespaces.Users, userID, true)
}

// OwnsAlias reports whether alias matches one of the service's aliases namespaces.
func (a *ApplicationService) OwnsAlias(alias string) bool {
	return matchAny(a.Namespaces.Aliases, alias, false)
}

// ExclusiveAlias reports whether alias is in one of the service's exclusive aliases
// namespaces.
func (a *ApplicationService) ExclusiveAlias(alias string) bool {
	return matchAny(a.Namespaces.Aliases, alias, true)
}

// OwnsRoomID reports whether roomID matches one of the service's rooms namespaces.
func (a *ApplicationService) OwnsRoomID(roomID string) bool {
	return matchAny(a.Namespaces.Rooms, roomID, false)
}

// HasProtocol reports whether the service provides the third-party protocol.
func (a *ApplicationService) HasProtocol(protocol string) bool {
	for _, p := range a.Protocols {
		if p == protocol {
			return true
		}
	}
	return false
}

func matchAny(ns []Namespace, s string, exclusiveOnly bool) bool {
	for _, n := range ns {
		if (!exclusiveOnly || n.Exclusive) && n.re != nil && n.re.MatchString(s) {
			return true
		}
	}
	return false
}

// ParseRegistration parses and checks one registration file's content for a homeserver
// named serverName; problems are reported through bad with path as the prefix of their
// YAML paths. Duplicates across files are checked by the caller.
func ParseRegistration(b []byte, serverName, path string, bad func(path, problem string)) *ApplicationService {
	var a ApplicationService
	if err := yaml.Unmarshal(b, &a); err != nil {
		bad(path, "is not a registration file: "+err.Error())
		return nil
	}
	ok := true
	fail := func(key, problem string) {
		ok = false
		bad(path+"."+key, problem)
	}
	for key, v := range map[string]string{"id": a.ID, "as_token": a.ASToken, "hs_token": a.HSToken, "sender_localpart": a.SenderLocalpart} {
		if strings.TrimSpace(v) == "" {
			fail(key, "must not be empty")
		}
	}
	if a.ASToken != "" && a.ASToken == a.HSToken {
		fail("hs_token", "must differ from as_token")
	}
	if a.URL != "" {
		if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fail("url", "must be an http:// or https:// URL, or null")
		}
	}
	if a.SenderLocalpart != "" && !validLocalpart(a.SenderLocalpart) {
		fail("sender_localpart", "must be a valid user ID localpart (a-z, 0-9, ._=-/+)")
	}
	for kind, ns := range map[string][]Namespace{"users": a.Namespaces.Users, "aliases": a.Namespaces.Aliases, "rooms": a.Namespaces.Rooms} {
		for i := range ns {
			re, err := regexp.Compile("^(?:" + ns[i].Regex + ")$")
			switch {
			case ns[i].Regex == "":
				fail(fmt.Sprintf("namespaces.%s[%d].regex", kind, i), "must not be empty")
			case err != nil:
				fail(fmt.Sprintf("namespaces.%s[%d].regex", kind, i), "is not a valid regular expression: "+err.Error())
			default:
				ns[i].re = re
			}
		}
	}
	if !ok {
		return nil
	}
	a.sender = "@" + a.SenderLocalpart + ":" + serverName
	return &a
}

// validLocalpart is the spec's grammar of user ID localparts.
func validLocalpart(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._=-/+", r)) {
			return false
		}
	}
	return true
}

// loadRegistrations reads and checks every registration file and fills in Registrations:
// each file on its own, then across files no two services may share an ID, an as_token,
// a sender or an exclusive namespace's regular expression.
func (c *AppServiceAPI) loadRegistrations(serverName string, bad func(path, problem string)) {
	c.Registrations = nil
	seen := map[string]string{} // "kind\x00value" -> path of the first file with it
	for i, file := range c.ConfigFiles {
		path := fmt.Sprintf("app_service_api.config_files[%d]", i)
		b, err := os.ReadFile(file)
		if err != nil {
			bad(path, "cannot read the registration file "+file)
			continue
		}
		a := ParseRegistration(b, serverName, path+" ("+file+")", bad)
		if a == nil {
			continue
		}
		unique := []struct{ what, value string }{{"id", a.ID}, {"as_token", a.ASToken}, {"hs_token", a.HSToken}, {"sender", a.sender}}
		for _, n := range a.Namespaces.Users {
			if n.Exclusive {
				unique = append(unique, struct{ what, value string }{"exclusive users regex", n.Regex})
			}
		}
		for _, n := range a.Namespaces.Aliases {
			if n.Exclusive {
				unique = append(unique, struct{ what, value string }{"exclusive aliases regex", n.Regex})
			}
		}
		dup := false
		for _, u := range unique {
			key := u.what + "\x00" + u.value
			if first, ok := seen[key]; ok {
				bad(path, fmt.Sprintf("%s (%s) is the same as in %s; each service needs its own", u.what, file, first))
				dup = true
				continue
			}
			seen[key] = path
		}
		if !dup {
			c.Registrations = append(c.Registrations, a)
		}
	}
}

func (c *AppServiceAPI) verify(serverName string, bad func(path, problem string)) {
	if c.MinBackoff <= 0 {
		bad("app_service_api.min_backoff", "must be positive")
	}
	if c.MaxBackoff < c.MinBackoff {
		bad("app_service_api.max_backoff", "must be at least min_backoff")
	}
	if c.RequestTimeout <= 0 {
		bad("app_service_api.request_timeout", "must be positive")
	}
	c.loadRegistrations(serverName, bad)
}

// The lookups below answer nil on a nil *AppServiceAPI (no application services).

// AppServiceByToken is the registration whose as_token is token, nil if none.
func (c *AppServiceAPI) AppServiceByToken(token string) *ApplicationService {
	if c == nil {
		return nil
	}
	for _, a := range c.Registrations {
		if subtle.ConstantTimeCompare([]byte(a.ASToken), []byte(token)) == 1 {
			return a
		}
	}
	return nil
}

// ExclusiveUserID is the service with userID in an exclusive users namespace, nil if none.
func (c *AppServiceAPI) ExclusiveUserID(userID string) *ApplicationService {
	if c == nil {
		return nil
	}
	for _, a := range c.Registrations {
		if a.ExclusiveUserID(userID) {
			return a
		}
	}
	return nil
}

// ExclusiveAlias is the service with alias in an exclusive aliases namespace, nil if none.
func (c *AppServiceAPI) ExclusiveAlias(alias string) *ApplicationService {
	if c == nil {
		return nil
	}
	for _, a := range c.Registrations {
		if a.ExclusiveAlias(alias) {
			return a
		}
	}
	return nil
}

// AppServiceByID is the registration with the ID, nil if none (or id is empty).
func (c *AppServiceAPI) AppServiceByID(id string) *ApplicationService {
	if c == nil {
		return nil
	}
	for _, a := range c.Registrations {
		if id != "" && a.ID == id {
			return a
		}
	}
	return nil
}

// OwnerOfUserID is the first service whose users namespace (exclusive or not) has userID,
// nil if none.
func (c *AppServiceAPI) OwnerOfUserID(userID string) *ApplicationService {
	if c == nil {
		return nil
	}
	for _, a := range c.Registrations {
		if a.OwnsUserID(userID) {
			return a
		}
	}
	return nil
}

// OwnerOfAlias is the first service whose aliases namespace (exclusive or not) has alias,
// nil if none.
func (c *AppServiceAPI) OwnerOfAlias(alias string) *ApplicationService {
	if c == nil {
		return nil
	}
	for _, a := range c.Registrations {
		if a.OwnsAlias(alias) {
			return a
		}
	}
	return nil
}
