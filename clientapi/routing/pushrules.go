package routing

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"net/http"
	"net/url"
	"strings"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/pushrules"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// pushRulesPrefix is where the push rule paths start, after the client API prefix.
const pushRulesPrefix = "/pushrules/"

// pushRulePath is a parsed /pushrules/ path: global/{kind}/{ruleId}/{attr}, each part
// unescaped. Parts holds as many parts as the path had.
type pushRulePath struct {
	parts []string
}

// parsePushRulePath splits the path after /pushrules/ into unescaped parts (an escaped
// slash stays inside its part, where ValidateRuleID refuses it).
func parsePushRulePath(r *http.Request) (pushRulePath, error) {
	p := r.URL.EscapedPath()
	i := strings.Index(p, pushRulesPrefix)
	if i < 0 {
		return pushRulePath{}, matrixerr.Unrecognized("not a push rules path")
	}
	raw := strings.Split(p[i+len(pushRulesPrefix):], "/")
	out := pushRulePath{parts: make([]string, len(raw))}
	for j, s := range raw {
		u, err := url.PathUnescape(s)
		if err != nil {
			return pushRulePath{}, matrixerr.InvalidParam("the push rule path is not escaped correctly")
		}
		out.parts[j] = u
	}
	if len(out.parts) > 1 && out.parts[0] != pushrules.ScopeGlobal {
		return pushRulePath{}, matrixerr.InvalidParam("the only push rule scope is global")
	}
	if len(out.parts) > 2 && !pushrules.ValidKind(pushrules.Kind(out.parts[1])) {
		return pushRulePath{}, matrixerr.InvalidParam("unknown push rule kind")
	}
	return out, nil
}

func (p pushRulePath) kind() pushrules.Kind { return pushrules.Kind(p.parts[1]) }

// pushRuleAttr checks the attribute part of global/{kind}/{ruleId}/{attr}.
func (p pushRulePath) attr() (string, error) {
	switch a := p.parts[3]; a {
	case "enabled", "actions":
		return a, nil
	}
	return "", matrixerr.InvalidParam("a push rule's attributes are enabled and actions")
}

// loadPushRules returns the user's effective ruleset.
func (a *Accounts) loadPushRules(ctx context.Context, userID string) (*pushrules.Ruleset, error) {
	res, err := a.UserAPI.QueryAccountData(ctx, &uapi.QueryAccountDataRequest{UserID: userID, DataType: pushrules.AccountDataType})
	if err != nil {
		return nil, err
	}
	return pushrules.Load(userID, res.Global[pushrules.AccountDataType])
}

// editPushRules applies edit to the user's ruleset and stores the result as m.push_rules
// account data (which /sync then shows). Edits of one user are serialized in this process
// so that two concurrent changes do not undo each other.
func (a *Accounts) editPushRules(ctx context.Context, userID string, edit func(rs *pushrules.Ruleset) error) error {
	h := fnv.New32a()
	_, _ = h.Write([]byte(userID)) // a hash.Hash never returns an error
	mu := &a.pushRuleLocks[h.Sum32()%uint32(len(a.pushRuleLocks))]
	mu.Lock()
	defer mu.Unlock()
	rs, err := a.loadPushRules(ctx, userID)
	if err != nil {
		return err
	}
	if err = edit(rs); err != nil {
		return err
	}
	content, err := rs.Marshal()
	if err != nil {
		return err
	}
	_, err = a.UserAPI.PerformAccountData(ctx, &uapi.PerformAccountDataRequest{UserID: userID, DataType: pushrules.AccountDataType, Data: content})
	return err
}

// GetPushRules is GET /pushrules/ and everything below it: the whole ruleset, the global
// scope, one kind, one rule or one rule's enabled flag or actions.
func (a *Accounts) GetPushRules(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	p, err := parsePushRulePath(r)
	if err != nil {
		return httputil.Response{}, err
	}
	rs, err := a.loadPushRules(r.Context(), dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	n := len(p.parts)
	switch {
	case n == 1 && p.parts[0] == "":
		return httputil.OK(map[string]*pushrules.Ruleset{pushrules.ScopeGlobal: rs}), nil
	case n == 2 && p.parts[1] == "":
		return httputil.OK(rs), nil
	case n == 3 && p.parts[2] == "":
		return httputil.OK(*rs.List(p.kind())), nil
	case n < 3 || n > 4:
		return httputil.Response{}, matrixerr.InvalidParam("a push rule path is global/{kind}/{ruleId}, or ends with a slash for a list")
	}
	rule := rs.Find(p.kind(), p.parts[2])
	if n == 4 {
		attr, err := p.attr()
		if err != nil {
			return httputil.Response{}, err
		}
		if rule == nil {
			return httputil.Response{}, matrixerr.NotFound("no push rule with this ID")
		}
		if attr == "enabled" {
			return httputil.OK(map[string]bool{"enabled": rule.Enabled}), nil
		}
		return httputil.OK(map[string][]json.RawMessage{"actions": rule.Actions}), nil
	}
	if rule == nil {
		return httputil.Response{}, matrixerr.NotFound("no push rule with this ID")
	}
	return httputil.OK(rule), nil
}

// PutPushRule is PUT /pushrules/global/{kind}/{ruleId} (add or replace a user rule, with
// the before and after query parameters) and PUT .../{ruleId}/enabled and .../actions.
func (a *Accounts) PutPushRule(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	p, err := parsePushRulePath(r)
	if err != nil {
		return httputil.Response{}, err
	}
	switch len(p.parts) {
	case 3:
		return a.putPushRule(r, dev, p)
	case 4:
		return a.putPushRuleAttr(r, dev, p)
	}
	return httputil.Response{}, matrixerr.InvalidParam("a push rule path is global/{kind}/{ruleId}")
}

func (a *Accounts) putPushRule(r *http.Request, dev *uapi.Device, p pushRulePath) (httputil.Response, error) {
	var body pushrules.NewRule
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	rule, err := pushrules.BuildRule(p.kind(), p.parts[2], body)
	if err != nil {
		return httputil.Response{}, err
	}
	q := r.URL.Query()
	err = a.editPushRules(r.Context(), dev.UserID, func(rs *pushrules.Ruleset) error {
		return rs.Put(p.kind(), rule, q.Get("before"), q.Get("after"))
	})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

func (a *Accounts) putPushRuleAttr(r *http.Request, dev *uapi.Device, p pushRulePath) (httputil.Response, error) {
	attr, err := p.attr()
	if err != nil {
		return httputil.Response{}, err
	}
	var body struct {
		Enabled *bool              `json:"enabled"`
		Actions *[]json.RawMessage `json:"actions"`
	}
	if err = httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	switch {
	case attr == "enabled" && body.Enabled == nil:
		return httputil.Response{}, matrixerr.MissingParam("enabled is required")
	case attr == "actions" && body.Actions == nil:
		return httputil.Response{}, matrixerr.MissingParam("actions is required")
	case attr == "actions":
		if err = pushrules.ValidateActions(*body.Actions); err != nil {
			return httputil.Response{}, err
		}
	}
	err = a.editPushRules(r.Context(), dev.UserID, func(rs *pushrules.Ruleset) error {
		rule := rs.Find(p.kind(), p.parts[2])
		if rule == nil {
			return matrixerr.NotFound("no push rule with this ID")
		}
		if attr == "enabled" {
			rule.Enabled = *body.Enabled
		} else {
			rule.Actions = *body.Actions
		}
		return nil
	})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}

// DeletePushRule is DELETE /pushrules/global/{kind}/{ruleId}.
func (a *Accounts) DeletePushRule(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	p, err := parsePushRulePath(r)
	if err != nil {
		return httputil.Response{}, err
	}
	if len(p.parts) != 3 || p.parts[2] == "" {
		return httputil.Response{}, matrixerr.InvalidParam("a push rule path is global/{kind}/{ruleId}")
	}
	err = a.editPushRules(r.Context(), dev.UserID, func(rs *pushrules.Ruleset) error {
		return rs.Delete(p.kind(), p.parts[2])
	})
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(struct{}{}), nil
}
