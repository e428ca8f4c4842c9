package routing

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/federationapi/internal"
	"github.com/matrix-org/dendrite/federationapi/storage"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Limits of one transaction (spec: "Transactions are limited in size; they can have at
// most 50 PDUs and 100 EDUs").
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
)

type txnBody struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus"`
}

type pduResult struct {
	Error string `json:"error,omitempty"`
}

type sendResponse struct {
	PDUs map[string]pduResult `json:"pdus"`
}

// Send is PUT /_matrix/federation/v1/send/{txnID}. Each PDU is checked and written to the
// roomserver (internal.Inbound); its outcome is in the response, keyed by event ID: an
// error for one that could not be processed (bad signature, wrong origin, unknown room,
// server ACL), an empty result for one processed, including one the room's auth rules
// rejected (which sytest's and other servers' senders expect). A PDU that is not valid
// JSON for its room's version fails the whole transaction with 400 M_BAD_JSON (as Dendrite
// does, and sytest's "Server rejects invalid JSON in a version 6 room" expects). The
// response is stored per origin and transaction ID, so a retried transaction gets the same
// answer without being applied again (unless an internal failure kept it from being
// stored, in which case it is applied again, which the roomserver makes harmless).
func (rt *Routing) Send(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error) {
	ctx := r.Context()
	txnID := httputil.Vars(r)["txnID"]
	var body txnBody
	if err := json.Unmarshal(req.Content(), &body); err != nil {
		return httputil.Response{}, matrixerr.BadJSON("the transaction is not valid JSON")
	}
	if len(body.PDUs) > maxTxnPDUs || len(body.EDUs) > maxTxnEDUs {
		return httputil.Response{}, matrixerr.BadJSON("a transaction holds at most 50 PDUs and 100 EDUs")
	}
	origin := req.Origin()
	stored, err := rt.DB.TransactionResponse(ctx, origin, txnID)
	if err == nil {
		return httputil.OK(json.RawMessage(stored)), nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return httputil.Response{}, err
	}
	logger := httputil.Logger(r).WithField("origin", origin)
	res := sendResponse{PDUs: map[string]pduResult{}}
	complete := true
	outcomes, err := rt.Inbound.ProcessPDUs(ctx, origin, body.PDUs)
	if err != nil {
		return httputil.Response{}, err
	}
	for _, o := range outcomes {
		eventID, err := o.EventID, o.Err
		if err == nil {
			res.PDUs[eventID] = pduResult{}
			continue
		}
		if internal.HandledByRejection(err) {
			logger.WithError(err).WithField("event_id", eventID).Debug("received event rejected by the auth rules")
			res.PDUs[eventID] = pduResult{}
			continue
		}
		msg, safe := internal.ResultError(err)
		if !safe {
			complete = false
			logger.WithError(err).WithField("event_id", eventID).Warn("processing a received event failed")
		} else {
			logger.WithField("event_id", eventID).WithField("reason", msg).Debug("received event refused")
		}
		if eventID != "" {
			res.PDUs[eventID] = pduResult{Error: msg}
		}
	}
	rt.EDUs.Receive(r.Context(), origin, body.EDUs)
	if complete {
		b, err := json.Marshal(res)
		if err != nil {
			return httputil.Response{}, err
		}
		if err = rt.DB.StoreTransactionResponse(ctx, origin, txnID, b, spec.AsTimestamp(time.Now())); err != nil {
			logger.WithError(err).Warn("storing a transaction's response failed")
		}
	}
	return httputil.OK(res), nil
}
