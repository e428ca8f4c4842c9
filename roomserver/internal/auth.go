package internal

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventcontent"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// allowed is the roomserver's auth check of an event against the auth events the rules
// read, for local and federated events alike. gomatrixserverlib.Allowed implements most of
// the spec's authorisation rules, but the pinned version departs from them in places where
// it lets through events the spec rejects (docs/auth.md lists every rule and what was
// found); specAuth rejects those events first. It also refuses one the spec accepts: an
// invite completing a third-party invite whose signed block holds more than mxid, token and
// signatures (the sender of /join's third_party_signed and of identity servers' /3pid/onbind
// blocks), whose signature it checks over a copy without them; thirdPartyInviteAllowed
// decides those invites in its place. A *matrixerr.Error comes back for content that does
// not parse (400 M_BAD_JSON for a local client), any other error is a refusal.
func allowed(ev gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents) error {
	if err := specAuth(ev, auth); err != nil {
		return err
	}
	if signed := eventcontent.ThirdPartySigned(ev); signed != nil {
		return thirdPartyInviteAllowed(ev, auth, signed)
	}
	return gomatrixserverlib.Allowed(ev, auth, userIDForSender)
}

// authRefusal is a refusal by one of the spec's rules that gomatrixserverlib omits.
func authRefusal(format string, args ...any) error {
	return matrixerr.Forbidden(fmt.Sprintf(format, args...))
}

// specAuth applies the spec's authorisation rules (rooms v1-12, "Authorization rules")
// that gomatrixserverlib.Allowed gets wrong. It only ever rejects: an event it passes
// still goes through gomatrixserverlib.Allowed.
func specAuth(ev gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents) error {
	switch ev.Type() {
	case spec.MRoomPowerLevels:
		return powerLevelsAuth(ev, auth)
	case spec.MRoomMember:
		return memberAuth(ev, auth)
	case spec.MRoomAliases:
		return aliasesAuth(ev, auth)
	}
	return nil
}

// versionAtLeast reports whether room version v is n or later; versions that are not
// numbers count as the newest.
func versionAtLeast(v gomatrixserverlib.RoomVersion, n int) bool {
	i, err := strconv.Atoi(string(v))
	return err != nil || i >= n
}

// power is a user's power level; room creators of v12+ rooms have infinite power.
type power struct {
	n       int64
	creator bool
}

// below reports whether the power is less than level.
func (p power) below(level int64) bool { return !p.creator && p.n < level }

// lessThan reports whether p is less than q.
func (p power) lessThan(q power) bool {
	if p.creator {
		return false
	}
	return q.creator || p.n < q.n
}

// roomPower is what the auth rules read of a room's power: its power levels (nil when it
// has none) and its creators.
type roomPower struct {
	pl         *eventcontent.PowerLevels
	creators   []string
	privileged bool // creators outrank every level (v12+)
}

// roomPowerOf reads the room's power from the auth events. Power levels the room version
// does not accept are M_BAD_JSON.
func roomPowerOf(ev gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents) (*roomPower, error) {
	rp := &roomPower{}
	verImpl, err := gomatrixserverlib.GetRoomVersion(ev.Version())
	if err != nil {
		return nil, authRefusal("unknown room version")
	}
	create, _ := auth.Create()
	if create != nil {
		rp.creators = []string{string(create.SenderID())}
		var c struct {
			Creator            string   `json:"creator"`
			AdditionalCreators []string `json:"additional_creators"`
		}
		if json.Unmarshal(create.Content(), &c) == nil {
			if verImpl.PrivilegedCreators() {
				rp.creators = append(rp.creators, c.AdditionalCreators...)
			} else if c.Creator != "" && !versionAtLeast(ev.Version(), 11) {
				rp.creators = []string{c.Creator}
			}
		}
		rp.privileged = verImpl.PrivilegedCreators()
	}
	plEv, _ := auth.PowerLevels()
	if plEv != nil {
		if rp.pl, err = eventcontent.ParsePowerLevels(ev.Version(), plEv.Content()); err != nil {
			return nil, err
		}
	}
	return rp, nil
}

// user is a user's power: infinite for a creator of a v12+ room; with no power levels
// event, 100 for the creator and 0 for everyone else.
func (rp *roomPower) user(userID string) power {
	isCreator := slices.Contains(rp.creators, userID)
	if rp.privileged && isCreator {
		return power{creator: true}
	}
	if rp.pl == nil {
		if isCreator {
			return power{n: 100}
		}
		return power{}
	}
	return power{n: rp.pl.UserLevel(userID)}
}

// level is a top-level level (ban, kick, invite...) in force.
func (rp *roomPower) level(key string) int64 {
	if rp.pl == nil {
		return (&eventcontent.PowerLevels{}).Level(key)
	}
	return rp.pl.Level(key)
}

// required is the level needed to send an event of the type: 0 in a room without power
// levels (state_default is 0 then).
func (rp *roomPower) required(evType string, state bool) int64 {
	if rp.pl == nil {
		return 0
	}
	return rp.pl.EventLevel(evType, state)
}

// powerLevelsAuth is the spec's rule for m.room.power_levels (rule 9 in rooms v3-v9, 10
// in v10-v12): every level of the right type, users keyed by user IDs, and, against the
// previous power levels, no level the sender does not outrank may be added, changed or
// removed. gomatrixserverlib leaves users_default out of the named levels (a user at the
// level that may send power levels could raise users_default above their own, so that
// every later joiner got that power), and compares levels through their defaults, so
// that removing an entry equal to the default passed unchecked.
func powerLevelsAuth(ev gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents) error {
	newPL, err := eventcontent.ParsePowerLevels(ev.Version(), ev.Content())
	if err != nil {
		return err
	}
	rp, err := roomPowerOf(ev, auth)
	if err != nil {
		return err
	}
	if rp.pl == nil {
		// "If there is no previous m.room.power_levels event in the room, allow."
		return nil
	}
	old := rp.pl
	sender := string(ev.SenderID())
	sp := rp.user(sender)
	for _, k := range eventcontent.LevelKeys {
		o, hadOld := old.Levels[k]
		n, hasNew := newPL.Levels[k]
		if hadOld == hasNew && o == n {
			continue
		}
		if hadOld && sp.below(o) {
			return authRefusal("sender may not change %s from %d, above their own power level", k, o)
		}
		if hasNew && sp.below(n) {
			return authRefusal("sender may not set %s to %d, above their own power level", k, n)
		}
	}
	maps := map[string][2]map[string]int64{"events": {old.Events, newPL.Events}}
	// Notifications joined the rule in room version 6.
	if versionAtLeast(ev.Version(), 6) {
		maps["notifications"] = [2]map[string]int64{old.Notifications, newPL.Notifications}
	}
	for name, m := range maps {
		if err := changedLevels(name, m[0], m[1], func(key string, o int64, hadOld bool, n int64, hasNew bool) error {
			if hadOld && sp.below(o) {
				return authRefusal("sender may not change %s[%q] from %d, above their own power level", name, key, o)
			}
			if hasNew && sp.below(n) {
				return authRefusal("sender may not set %s[%q] to %d, above their own power level", name, key, n)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return changedLevels("users", old.Users, newPL.Users, func(user string, o int64, hadOld bool, n int64, hasNew bool) error {
		if hadOld && user != sender && !(power{n: o}).lessThan(sp) {
			return authRefusal("sender may not change the power level of %s, which is not below their own", user)
		}
		if hasNew && sp.below(n) {
			return authRefusal("sender may not set the power level of %s to %d, above their own", user, n)
		}
		return nil
	})
}

// changedLevels calls f for every key added to, changed in or removed from a map of levels.
func changedLevels(name string, old, new map[string]int64, f func(key string, o int64, hadOld bool, n int64, hasNew bool) error) error {
	for k, o := range old {
		n, ok := new[k]
		if ok && n == o {
			continue
		}
		if err := f(k, o, true, n, ok); err != nil {
			return err
		}
	}
	for k, n := range new {
		if _, ok := old[k]; ok {
			continue
		}
		if err := f(k, 0, false, n, true); err != nil {
			return err
		}
	}
	return nil
}

// membershipIn is the user's membership in the auth events ("leave" without one).
func membershipIn(auth *gomatrixserverlib.AuthEvents, userID string) string {
	ev, _ := auth.Member(spec.SenderID(userID))
	if ev == nil {
		return spec.Leave
	}
	m, err := ev.Membership()
	if err != nil {
		return ""
	}
	return m
}

// joinRuleIn is the room's join rule in the auth events: "invite" without a join rules
// event, "" when its join_rule is not a string.
func joinRuleIn(auth *gomatrixserverlib.AuthEvents) string {
	ev, _ := auth.JoinRules()
	if ev == nil {
		return spec.Invite
	}
	var c struct {
		JoinRule string `json:"join_rule"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil {
		return ""
	}
	return c.JoinRule
}

// knownJoinRule reports whether the room version gives the join rule a meaning: knock from
// v7, restricted from v8, knock_restricted from v10.
func knownJoinRule(v gomatrixserverlib.RoomVersion, rule string) bool {
	switch rule {
	case spec.Public, spec.Invite:
		return true
	case spec.Knock:
		return versionAtLeast(v, 7)
	case spec.Restricted:
		return versionAtLeast(v, 8)
	case spec.KnockRestricted:
		return versionAtLeast(v, 10)
	}
	return false
}

// memberContent is what the membership rules read of m.room.member content.
type memberContent struct {
	Membership       string `json:"membership"`
	ThirdPartyInvite *struct {
		Signed *struct {
			MXID  string `json:"mxid"`
			Token string `json:"token"`
		} `json:"signed"`
	} `json:"third_party_invite"`
}

// memberAuth applies the spec's membership rules that gomatrixserverlib departs from.
func memberAuth(ev gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents) error {
	if ev.StateKey() == nil {
		return nil
	}
	var c memberContent
	if json.Unmarshal(ev.Content(), &c) != nil {
		return nil
	}
	sender, target := string(ev.SenderID()), *ev.StateKey()
	switch c.Membership {
	case spec.Join:
		return joinAuth(ev, auth, sender, target)
	case spec.Knock:
		// "If the join_rule is anything other than knock [or knock_restricted, from v10],
		// reject": gomatrixserverlib accepts knock_restricted from v7.
		if rule := joinRuleIn(auth); rule != spec.Knock && !(rule == spec.KnockRestricted && versionAtLeast(ev.Version(), 10)) {
			return authRefusal("the join rule %q does not allow knocking in room version %s", rule, ev.Version())
		}
	case spec.Invite:
		return thirdPartyInviteAuth(auth, &c, sender, target)
	case spec.Leave:
		return leaveAuth(ev, auth, sender, target)
	}
	return nil
}

// joinAuth: "If the join_rule is invite or knock then allow if membership state is invite
// or join ... If the join_rule is public, allow. Otherwise, reject." gomatrixserverlib lets
// an invited user join under any join rule, including ones the room version does not know
// (knock before v7, restricted before v8, knock_restricted before v10, private, or a
// join_rule that is not a string).
func joinAuth(ev gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents, sender, target string) error {
	if sender != target {
		return nil
	}
	create, _ := auth.Create()
	if prev := ev.PrevEventIDs(); create != nil && len(prev) == 1 && prev[0] == create.EventID() {
		// "If the only previous event is an m.room.create and the state_key is the
		// creator, allow": gomatrixserverlib decides the creator's first join.
		return nil
	}
	if m := membershipIn(auth, sender); m == spec.Ban {
		return nil // gomatrixserverlib refuses the banned
	}
	if rule := joinRuleIn(auth); !knownJoinRule(ev.Version(), rule) {
		return authRefusal("the join rule %q lets nobody join in room version %s", rule, ev.Version())
	}
	return nil
}

// thirdPartyInviteAuth: an invite with third_party_invite is rejected if the target is
// banned, if signed lacks mxid or token, or if the sender is not the sender of the
// m.room.third_party_invite it names; thirdPartyInviteAllowed checks the rest.
func thirdPartyInviteAuth(auth *gomatrixserverlib.AuthEvents, c *memberContent, sender, target string) error {
	if c.ThirdPartyInvite == nil {
		return nil
	}
	if membershipIn(auth, target) == spec.Ban {
		return authRefusal("a banned user cannot be invited")
	}
	signed := c.ThirdPartyInvite.Signed
	if signed == nil || signed.MXID == "" || signed.Token == "" {
		return authRefusal("third_party_invite.signed needs mxid and token")
	}
	tpi, _ := auth.ThirdPartyInvite(signed.Token)
	if tpi == nil {
		return authRefusal("no m.room.third_party_invite for the token")
	}
	if string(tpi.SenderID()) != sender {
		return authRefusal("only the sender of the third-party invite may complete it")
	}
	return nil
}

// thirdPartyInviteAllowed is the spec's rule for an invite with third_party_invite, after
// the rules every event goes through (an m.room.create of the same room in the auth events,
// and its m.federate): specAuth has checked the target is not banned, that signed has mxid
// and token, and that the m.room.third_party_invite for the token exists and has the
// invite's sender. "If mxid does not match state_key, reject. If any signature in signed
// matches any public key in the m.room.third_party_invite event, allow" (the signature
// covers the whole block, as gomatrixserverlib.VerifyJSON computes it); "otherwise, reject".
func thirdPartyInviteAllowed(ev gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents, signed json.RawMessage) error {
	create, _ := auth.Create()
	if create == nil || create.RoomID().String() != ev.RoomID().String() {
		return authRefusal("no m.room.create event of the room in the auth events")
	}
	if err := federationAllowed(create, ev.SenderID()); err != nil {
		return err
	}
	var block struct {
		MXID       string                       `json:"mxid"`
		Token      string                       `json:"token"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if json.Unmarshal(signed, &block) != nil || block.MXID != *ev.StateKey() {
		return authRefusal("third_party_invite.signed.mxid is not the invited user")
	}
	tpi, _ := auth.ThirdPartyInvite(block.Token)
	if tpi == nil {
		return authRefusal("no m.room.third_party_invite for the token")
	}
	for _, pub := range thirdPartyInviteKeys(tpi.Content()) {
		for domain, sigs := range block.Signatures {
			for keyID := range sigs {
				if strings.HasPrefix(keyID, "ed25519:") &&
					gomatrixserverlib.VerifyJSON(domain, gomatrixserverlib.KeyID(keyID), pub, signed) == nil {
					return nil
				}
			}
		}
	}
	return authRefusal("no key of the third-party invite signed third_party_invite.signed")
}

// thirdPartyInviteKeys are the ed25519 keys of an m.room.third_party_invite's content:
// public_key and every public_keys entry's public_key (unpadded or padded base64).
func thirdPartyInviteKeys(content []byte) []ed25519.PublicKey {
	var c struct {
		PublicKey  string `json:"public_key"`
		PublicKeys []struct {
			PublicKey string `json:"public_key"`
		} `json:"public_keys"`
	}
	if json.Unmarshal(content, &c) != nil {
		return nil
	}
	encoded := []string{c.PublicKey}
	for _, k := range c.PublicKeys {
		encoded = append(encoded, k.PublicKey)
	}
	var out []ed25519.PublicKey
	for _, e := range encoded {
		var b spec.Base64Bytes
		if e != "" && b.Decode(e) == nil && len(b) == ed25519.PublicKeySize {
			out = append(out, ed25519.PublicKey(b))
		}
	}
	return out
}

// federationAllowed: "If the create event content has the field m.federate set to false
// and the sender domain of the event does not match the sender domain of the create event,
// reject."
func federationAllowed(create gomatrixserverlib.PDU, sender spec.SenderID) error {
	var c struct {
		Federate *bool `json:"m.federate"`
	}
	if json.Unmarshal(create.Content(), &c) != nil || c.Federate == nil || *c.Federate {
		return nil
	}
	s, errS := spec.NewUserID(string(sender), true)
	cr, errC := spec.NewUserID(string(create.SenderID()), true)
	if errS != nil || errC != nil || s.Domain() != cr.Domain() {
		return authRefusal("the room does not federate with the sender's server")
	}
	return nil
}

// leaveAuth: a user may leave only from invite, join or knock (gomatrixserverlib also
// allows leave to leave); unbanning needs the kick level and more power than the target,
// as kicking does, besides the ban level (gomatrixserverlib asks only for the ban level).
func leaveAuth(ev gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents, sender, target string) error {
	current := membershipIn(auth, target)
	if sender == target {
		if current != spec.Invite && current != spec.Join && current != spec.Knock {
			return authRefusal("a user whose membership is %q cannot leave", current)
		}
		return nil
	}
	if current != spec.Ban {
		return nil
	}
	rp, err := roomPowerOf(ev, auth)
	if err != nil {
		return err
	}
	sp := rp.user(sender)
	if sp.below(rp.level("kick")) || !rp.user(target).lessThan(sp) {
		return authRefusal("unbanning needs the kick level and more power than the target")
	}
	return nil
}

// aliasesAuth: from room version 6, m.room.aliases has no rule of its own and goes through
// the rules of every event: the sender must be joined and have the event's required power
// level. gomatrixserverlib applies the v1-v5 rule (state_key is the sender's server) in
// every version.
func aliasesAuth(ev gomatrixserverlib.PDU, auth *gomatrixserverlib.AuthEvents) error {
	if !versionAtLeast(ev.Version(), 6) {
		return nil
	}
	sender := string(ev.SenderID())
	if membershipIn(auth, sender) != spec.Join {
		return authRefusal("sender is not joined to the room")
	}
	rp, err := roomPowerOf(ev, auth)
	if err != nil {
		return err
	}
	if rp.user(sender).below(rp.required(ev.Type(), ev.StateKey() != nil)) {
		return authRefusal("sender's power level is below the level needed for %s", ev.Type())
	}
	return nil
}

// specStateNeeded is the state the spec's auth rules read for an event, where it is more
// than gomatrixserverlib selects: from room version 6 an m.room.aliases event needs the
// power levels and the sender's membership like any event ("Auth events selection").
func specStateNeeded(needed gomatrixserverlib.StateNeeded, v gomatrixserverlib.RoomVersion, evType string, sender spec.SenderID) gomatrixserverlib.StateNeeded {
	if evType == spec.MRoomAliases && versionAtLeast(v, 6) {
		needed.PowerLevels = true
		needed.Member = append(needed.Member, string(sender))
	}
	return needed
}

// checkAuthEventsSelection is the rule on a federated event's auth_events: "If there are
// duplicate entries for a given type and state_key pair, reject." gomatrixserverlib keeps
// the last of duplicates and ignores the rest.
//
// NOTSPEC: the same rule goes on "If there are entries whose type and state_key don't match
// those specified by the auth events selection algorithm, reject"
// (https://spec.matrix.org/v1.16/rooms/v11/#authorization-rules). Synapse accepts such entries,
// and sytest (tests/50federation/52soft-fail.pl) sends messages citing the join rules, so
// refusing them would make this server reject events the rest of the room accepts and its state
// diverge. An unselected entry is ignored instead: the auth rules only read the entries they
// select, so it cannot change the outcome.
func checkAuthEventsSelection(authEvents []gomatrixserverlib.PDU) error {
	seen := map[gomatrixserverlib.StateKeyTuple]bool{}
	for _, a := range authEvents {
		if a.StateKey() == nil {
			return authRefusal("auth event %s is not a state event", a.EventID())
		}
		t := gomatrixserverlib.StateKeyTuple{EventType: a.Type(), StateKey: *a.StateKey()}
		if seen[t] {
			return authRefusal("auth_events hold two %s events for state key %q", t.EventType, t.StateKey)
		}
		seen[t] = true
	}
	return nil
}
