package internal

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/internal/e2ekeys"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// The purposes of cross-signing keys, as their usage field names them.
const (
	purposeMaster      = "master"
	purposeSelfSigning = "self_signing"
	purposeUserSigning = "user_signing"
)

// crossSigningKey is a parsed CrossSigningKey object.
type crossSigningKey struct {
	pub ed25519.PublicKey
	// id is "ed25519:<public key>"; pubB64 the public key as sent.
	id, pubB64 string
	// canonical is the object as stored (canonical JSON, signatures included).
	canonical []byte
}

// parseCrossSigningKey checks a CrossSigningKey object of userID with usage purpose and
// one ed25519 key.
func parseCrossSigningKey(raw json.RawMessage, userID, purpose string) (*crossSigningKey, error) {
	k, err := e2ekeys.ParseCrossSigningKey(raw, userID, purpose)
	if errors.Is(err, e2ekeys.ErrWrongOwner) {
		return nil, matrixerr.InvalidParam("the " + purpose + " key must be the uploading user's, with usage " + purpose + " and one ed25519 key")
	}
	if err != nil {
		return nil, matrixerr.BadJSON("a cross-signing key must be a CrossSigningKey object with one key ed25519:<public key>")
	}
	canonical, err := gomatrixserverlib.CanonicalJSON(raw)
	if err != nil {
		return nil, matrixerr.BadJSON("a cross-signing key must be a CrossSigningKey object")
	}
	return &crossSigningKey{pub: k.Public, id: k.ID, pubB64: k.PublicBase64, canonical: canonical}, nil
}

// PerformUploadDeviceSigningKeys checks and stores a user's cross-signing keys: the
// self-signing and user-signing keys must be signed by the master key (the one uploaded
// with them, else the stored one), and no key may be a device ID. Without Authenticated,
// only a first upload or an identical one is accepted (the spec's exceptions to UIA).
func (u *UserAPI) PerformUploadDeviceSigningKeys(ctx context.Context, req *api.PerformUploadDeviceSigningKeysRequest) (*api.PerformUploadDeviceSigningKeysResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	stored, err := u.DB.CrossSigningKeys(ctx, local)
	if err != nil {
		return nil, err
	}
	uploads := map[string]json.RawMessage{purposeMaster: req.MasterKey, purposeSelfSigning: req.SelfSigningKey, purposeUserSigning: req.UserSigningKey}
	parsed := map[string]*crossSigningKey{}
	for _, purpose := range []string{purposeMaster, purposeSelfSigning, purposeUserSigning} {
		if raw := uploads[purpose]; len(raw) > 0 && string(raw) != "null" {
			if parsed[purpose], err = parseCrossSigningKey(raw, req.UserID, purpose); err != nil {
				return nil, err
			}
		}
	}
	if len(parsed) == 0 {
		return &api.PerformUploadDeviceSigningKeysResponse{}, nil
	}
	master := parsed[purposeMaster]
	if master == nil && stored[purposeMaster] != nil {
		if master, err = parseCrossSigningKey(stored[purposeMaster], req.UserID, purposeMaster); err != nil {
			return nil, fmt.Errorf("stored master key: %w", err)
		}
	}
	if master == nil {
		return nil, matrixerr.MissingParam("no master key is available")
	}
	for _, purpose := range []string{purposeSelfSigning, purposeUserSigning} {
		k := parsed[purpose]
		if k != nil && gomatrixserverlib.VerifyJSON(req.UserID, gomatrixserverlib.KeyID(master.id), master.pub, uploads[purpose]) != nil {
			return nil, matrixerr.InvalidSignature("the " + purpose + " key is not signed by the master key")
		}
	}
	changed := map[string][]byte{}
	for purpose, k := range parsed {
		if !bytes.Equal(k.canonical, stored[purpose]) {
			changed[purpose] = k.canonical
		}
	}
	if len(changed) == 0 {
		return &api.PerformUploadDeviceSigningKeysResponse{}, nil
	}
	if stored[purposeMaster] != nil && !req.Authenticated {
		return nil, matrixerr.Unauthorized("replacing cross-signing keys needs authentication")
	}
	devs, err := u.DB.Devices(ctx, local)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		for _, k := range parsed {
			if d.DeviceID == k.pubB64 {
				return nil, matrixerr.Forbidden("a cross-signing key is the ID of one of the user's devices")
			}
		}
	}
	// Only a changed user-signing key is seen by no one else.
	private := changed[purposeMaster] == nil && changed[purposeSelfSigning] == nil
	if _, err = u.DB.PutCrossSigningKeys(ctx, local, changed, func(c storage.CrossSigningChange) ([]*storage.Output, error) {
		change := &api.CrossSigningKeyChange{UserID: req.UserID, StreamID: c.StreamID, NotifyOnly: req.UserID}
		if !private {
			change = publicCrossSigning(req.UserID, c.StreamID, c.Keys)
		}
		return []*storage.Output{u.crossSigningOutput(change)}, nil
	}); err != nil {
		return nil, err
	}
	u.Announce(ctx)
	return &api.PerformUploadDeviceSigningKeysResponse{}, nil
}

// publicCrossSigning is the change of userID's cross-signing keys keys that everyone sees.
func publicCrossSigning(userID string, stream int64, keys map[string][]byte) *api.CrossSigningKeyChange {
	return &api.CrossSigningKeyChange{UserID: userID, StreamID: stream, MasterKey: keys[purposeMaster], SelfSigningKey: keys[purposeSelfSigning]}
}

// crossSigningOutput is the outbox record announcing c on OutputKeyChangeEvent, keyed by
// the user whose stream StreamID is.
func (u *UserAPI) crossSigningOutput(c *api.CrossSigningKeyChange) *storage.Output {
	key := c.UserID
	if c.NotifyOnly != "" {
		key = c.NotifyOnly
	}
	return u.keyChangeOutput(key, api.OutputKeyChangeEvent{Type: api.OutputKeyChangeTypeCrossSigning, CrossSigning: c})
}

// signatureFailure is a per-key error of /keys/signatures/upload.
func signatureFailure(e *matrixerr.Error) json.RawMessage {
	b, _ := json.Marshal(e) // a plain struct
	return b
}

// PerformUploadSignatures stores signatures made by req.UserID: on their own devices (by
// their self-signing key), on their own master key (by one of their devices), and on
// other users' master keys (by their user-signing key), local users' or other servers'
// (whose keys are read from the copy of their device list, fetched when missing or
// stale). Each signed object must be the stored key with signatures added, and each
// signature must verify; failures are reported per key and store nothing for that key.
// A signature on another user's master key is seen by its signer alone (the spec's
// "Cross-signing"): it is announced to the signer and sent to no other server.
func (u *UserAPI) PerformUploadSignatures(ctx context.Context, req *api.PerformUploadSignaturesRequest) (*api.PerformUploadSignaturesResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	own, err := u.DB.CrossSigningKeys(ctx, local)
	if err != nil {
		return nil, err
	}
	res := &api.PerformUploadSignaturesResponse{Failures: map[string]map[string]json.RawMessage{}}
	fail := func(userID, keyID string, e *matrixerr.Error) {
		if res.Failures[userID] == nil {
			res.Failures[userID] = map[string]json.RawMessage{}
		}
		res.Failures[userID][keyID] = signatureFailure(e)
	}
	remote, err := u.remoteTargets(ctx, req.Signatures)
	if err != nil {
		return nil, err
	}
	var sigs []storage.KeySignature
	for target, keys := range req.Signatures {
		for keyID, obj := range keys {
			sig, merr := u.checkSignature(ctx, req.UserID, own, target, keyID, obj, remote)
			if merr != nil {
				fail(target, keyID, merr)
				continue
			}
			sigs = append(sigs, *sig)
		}
	}
	if len(sigs) == 0 {
		return res, nil
	}
	if _, err = u.DB.PutKeySignatures(ctx, sigs, []string{local}, u.signatureChanges(req.UserID, local, own, sigs)); err != nil {
		return nil, err
	}
	u.Announce(ctx)
	return res, nil
}

// signatureChanges announces the signatures sigs that signer (localpart local, with the
// cross-signing keys own, which signatures do not change) made: signatures on the
// signer's own keys are everyone's news; a signature on another user's master key only
// the signer sees.
func (u *UserAPI) signatureChanges(signer, local string, own map[string][]byte, sigs []storage.KeySignature) storage.Announcement[map[string]int64] {
	return func(streams map[string]int64) ([]*storage.Output, error) {
		var outs []*storage.Output
		announced := map[string]bool{}
		for _, sig := range sigs {
			if announced[sig.TargetUserID] {
				continue
			}
			announced[sig.TargetUserID] = true
			change := &api.CrossSigningKeyChange{UserID: sig.TargetUserID, StreamID: streams[local], NotifyOnly: signer}
			if sig.TargetUserID == signer {
				change = publicCrossSigning(signer, streams[local], own)
			}
			outs = append(outs, u.crossSigningOutput(change))
		}
		return outs, nil
	}
}

// remoteTargets is the device lists of the other servers' users among the signature
// upload's targets: the copies this server holds, fetched first when missing or stale
// (within DefaultRemoteTimeout; a stale copy stands when its server cannot be asked).
func (u *UserAPI) remoteTargets(ctx context.Context, targets map[string]map[string]json.RawMessage) (map[string]*storage.RemoteDeviceList, error) {
	var users []string
	for userID := range targets {
		if u.isRemoteUser(userID) {
			users = append(users, userID)
		}
	}
	if len(users) == 0 {
		return nil, nil
	}
	seen := u.resync.mark()
	lists, err := u.DB.RemoteDeviceLists(ctx, users)
	if err != nil {
		return nil, err
	}
	maps.Copy(lists, u.fetchAll(ctx, users, lists, seen, DefaultRemoteTimeout))
	return lists, nil
}

// remoteTargetKey is the key keyID of another server's user from the copy l of their
// device list: their master key when its public key is keyID. Their devices may not be
// signed by other users.
func remoteTargetKey(l *storage.RemoteDeviceList, userID, keyID string) (json.RawMessage, *matrixerr.Error) {
	if l == nil {
		return nil, matrixerr.NotFound("no keys of this user are known")
	}
	if l.MasterKey != nil {
		if k, err := e2ekeys.ParseCrossSigningKey(l.MasterKey, userID, purposeMaster); err == nil && k.PublicBase64 == keyID {
			return l.MasterKey, nil
		}
	}
	for _, d := range l.Devices {
		if d.DeviceID == keyID {
			return nil, matrixerr.InvalidParam("only master keys of other users can be signed")
		}
	}
	return nil, matrixerr.NotFound("no such key")
}

// checkSignature finds and verifies the signature signer made on target's key keyID;
// remote holds the device lists of the targets of other servers (remoteTargets).
func (u *UserAPI) checkSignature(ctx context.Context, signer string, own map[string][]byte, target, keyID string, obj json.RawMessage,
	remote map[string]*storage.RemoteDeviceList) (*storage.KeySignature, *matrixerr.Error) {
	var storedKey json.RawMessage
	targetLocal, err := u.localpart(target)
	switch {
	case err == nil:
		if storedKey, err = u.targetKey(ctx, target, targetLocal, keyID); err != nil {
			return nil, matrixerr.Unknown("the key could not be read")
		}
		if storedKey == nil {
			return nil, matrixerr.NotFound("no such key")
		}
	case u.isRemoteUser(target):
		var merr *matrixerr.Error
		if storedKey, merr = remoteTargetKey(remote[target], target, keyID); merr != nil {
			return nil, merr
		}
	default:
		return nil, matrixerr.NotFound("not a user ID")
	}
	if !sameKey(storedKey, obj) {
		return nil, matrixerr.InvalidParam("the signed object is not the stored key")
	}
	// Which of signer's keys may sign this target.
	var signingKeys map[string]ed25519.PublicKey
	switch {
	case target == signer && isMasterKey(storedKey):
		signingKeys, err = u.deviceSigningKeys(ctx, targetLocal)
		if err != nil {
			return nil, matrixerr.Unknown("the keys could not be read")
		}
	case target == signer:
		signingKeys = crossSigningPub(own[purposeSelfSigning], signer, purposeSelfSigning)
	case isMasterKey(storedKey):
		signingKeys = crossSigningPub(own[purposeUserSigning], signer, purposeUserSigning)
	default:
		return nil, matrixerr.InvalidParam("only master keys of other users can be signed")
	}
	var parsed struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if json.Unmarshal(obj, &parsed) != nil {
		return nil, matrixerr.BadJSON("the signed object is not valid")
	}
	for sigKeyID, sig := range parsed.Signatures[signer] {
		pub, ok := signingKeys[sigKeyID]
		if !ok {
			continue
		}
		if gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(sigKeyID), pub, obj) != nil {
			return nil, matrixerr.InvalidSignature("invalid signature")
		}
		return &storage.KeySignature{TargetUserID: target, TargetKeyID: keyID, SignerUserID: signer, SignerKeyID: sigKeyID, Signature: sig}, nil
	}
	return nil, matrixerr.InvalidSignature("no signature by a key that may sign this key")
}

// targetKey is the stored key a signature upload names: the user's device keyID, else
// their master key if its public key is keyID; nil when there is none.
func (u *UserAPI) targetKey(ctx context.Context, userID, local, keyID string) (json.RawMessage, error) {
	devs, err := u.DB.DeviceKeys(ctx, local, []string{keyID})
	if err != nil {
		return nil, err
	}
	if len(devs) == 1 {
		return devs[0].JSON, nil
	}
	cs, err := u.DB.CrossSigningKeys(ctx, local)
	if err != nil {
		return nil, err
	}
	if m := cs[purposeMaster]; m != nil {
		if k, err := parseCrossSigningKey(m, userID, purposeMaster); err == nil && k.pubB64 == keyID {
			return m, nil
		}
	}
	return nil, nil
}

func isMasterKey(raw json.RawMessage) bool {
	var k struct {
		Usage []string `json:"usage"`
	}
	return json.Unmarshal(raw, &k) == nil && slices.Contains(k.Usage, purposeMaster)
}

// crossSigningPub is {key ID: public key} of a stored cross-signing key, empty when none.
func crossSigningPub(raw []byte, userID, purpose string) map[string]ed25519.PublicKey {
	if raw == nil {
		return nil
	}
	k, err := parseCrossSigningKey(raw, userID, purpose)
	if err != nil {
		return nil
	}
	return map[string]ed25519.PublicKey{k.id: k.pub}
}

// deviceSigningKeys is {"ed25519:<device ID>": key} of the user's devices with keys.
func (u *UserAPI) deviceSigningKeys(ctx context.Context, local string) (map[string]ed25519.PublicKey, error) {
	devs, err := u.DB.DeviceKeys(ctx, local, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]ed25519.PublicKey{}
	for _, d := range devs {
		var dk e2ekeys.DeviceKeys
		if json.Unmarshal(d.JSON, &dk) != nil {
			continue
		}
		if pub, ok := e2ekeys.DecodeKey(dk.Keys["ed25519:"+d.DeviceID]); ok {
			out["ed25519:"+d.DeviceID] = pub
		}
	}
	return out, nil
}

// sameKey reports whether two key objects are equal but for signatures and unsigned.
func sameKey(a, b json.RawMessage) bool {
	strip := func(raw json.RawMessage) []byte {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return nil
		}
		delete(obj, "signatures")
		delete(obj, "unsigned")
		out, err := json.Marshal(obj)
		if err != nil {
			return nil
		}
		c, err := gomatrixserverlib.CanonicalJSON(out)
		if err != nil {
			return nil
		}
		return c
	}
	sa, sb := strip(a), strip(b)
	return sa != nil && bytes.Equal(sa, sb)
}

// withSignatures adds to a key object the stored signatures on it that viewer may see:
// those made by the key's owner and those made by viewer.
func withSignatures(raw json.RawMessage, owner, viewer, keyID string, sigs []storage.KeySignature) (json.RawMessage, error) {
	var add []storage.KeySignature
	for _, s := range sigs {
		if s.TargetKeyID == keyID && (s.SignerUserID == owner || s.SignerUserID == viewer) {
			add = append(add, s)
		}
	}
	if len(add) == 0 {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	signatures := map[string]map[string]string{}
	if s, ok := obj["signatures"]; ok {
		if err := json.Unmarshal(s, &signatures); err != nil {
			return nil, err
		}
	}
	for _, s := range add {
		if signatures[s.SignerUserID] == nil {
			signatures[s.SignerUserID] = map[string]string{}
		}
		signatures[s.SignerUserID][s.SignerKeyID] = s.Signature
	}
	b, err := json.Marshal(signatures)
	if err != nil {
		return nil, err
	}
	obj["signatures"] = b
	return json.Marshal(obj)
}

// addCrossSigning fills in a local user's cross-signing keys for viewer: the master and
// self-signing keys, and the user-signing key only for the user themself.
func (u *UserAPI) addCrossSigning(ctx context.Context, res *api.QueryKeysResponse, userID, local, viewer string, sigs []storage.KeySignature) error {
	keys, err := u.DB.CrossSigningKeys(ctx, local)
	if err != nil {
		return err
	}
	if m := keys[purposeMaster]; m != nil {
		k, err := parseCrossSigningKey(m, userID, purposeMaster)
		if err != nil {
			return fmt.Errorf("stored master key: %w", err)
		}
		if res.MasterKeys[userID], err = withSignatures(m, userID, viewer, k.pubB64, sigs); err != nil {
			return err
		}
	}
	if s := keys[purposeSelfSigning]; s != nil {
		res.SelfSigningKeys[userID] = s
	}
	if s := keys[purposeUserSigning]; s != nil && userID == viewer {
		res.UserSigningKeys[userID] = s
	}
	return nil
}

// QueryDeviceList is a local user's devices (keys with the user's own signatures), the
// device-list stream ID and the master and self-signing keys, for another server; an
// unknown local user has no devices.
func (u *UserAPI) QueryDeviceList(ctx context.Context, req *api.QueryDeviceListRequest) (*api.QueryDeviceListResponse, error) {
	local, err := u.localpart(req.UserID)
	if err != nil {
		return nil, err
	}
	stream, err := u.DB.DeviceListStream(ctx, local)
	if err != nil {
		return nil, err
	}
	// Read the keys after the stream ID: a change in between shows up in the keys and
	// again in the m.device_list_update that follows it.
	q := &api.QueryKeysResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	sigs, err := u.DB.KeySignatures(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	keys, err := u.localDeviceKeys(ctx, local, nil)
	if err != nil {
		return nil, err
	}
	if err = u.addCrossSigning(ctx, q, req.UserID, local, "", sigs); err != nil {
		return nil, err
	}
	devs, err := u.DB.Devices(ctx, local)
	if err != nil {
		return nil, err
	}
	res := &api.QueryDeviceListResponse{UserID: req.UserID, StreamID: stream, Devices: []api.DeviceListEntry{},
		MasterKey: q.MasterKeys[req.UserID], SelfSigningKey: q.SelfSigningKeys[req.UserID]}
	for _, d := range devs {
		e := api.DeviceListEntry{DeviceID: d.DeviceID, DisplayName: d.DisplayName}
		if k := keys[d.DeviceID]; k != nil {
			if e.Keys, err = withSignatures(k, req.UserID, "", d.DeviceID, sigs); err != nil {
				return nil, err
			}
		}
		res.Devices = append(res.Devices, e)
	}
	return res, nil
}
