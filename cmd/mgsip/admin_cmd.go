package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mgsip/mgsip/bridge"
	"github.com/mgsip/mgsip/internal/admin"
	"github.com/spf13/cobra"
)

// The operator commands talk to a running mgsip over its admin API.

type adminClient struct {
	admin.Client
	tokenFile string
	json      bool
}

// addAdminFlags adds the flags that say how to reach the API. The token's
// flag has no default from the environment: a default is printed by
// --help, and the token must never be.
func addAdminFlags(c *cobra.Command, ac *adminClient) {
	def := os.Getenv("MGSIP_ADMIN")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	c.Flags().StringVar(&ac.Base, "admin", def, "admin API: http(s)://host:port or unix:/path (env MGSIP_ADMIN)")
	c.Flags().StringVar(&ac.Token, "token", "", "bearer token (default: env MGSIP_ADMIN_TOKEN; prefer --token-file, a flag shows in ps)")
	c.Flags().StringVar(&ac.tokenFile, "token-file", "", "file holding the bearer token (env MGSIP_ADMIN_TOKEN_FILE)")
	c.Flags().StringVar(&ac.CACert, "cacert", os.Getenv("MGSIP_ADMIN_CACERT"), "PEM CA certificate an https API's certificate must chain to (env MGSIP_ADMIN_CACERT)")
}

// resolveToken picks the token: --token, else --token-file, else the
// environment (MGSIP_ADMIN_TOKEN, then MGSIP_ADMIN_TOKEN_FILE).
func (ac *adminClient) resolveToken() error {
	if ac.Token != "" {
		return nil
	}
	file := ac.tokenFile
	if file == "" {
		if v := os.Getenv("MGSIP_ADMIN_TOKEN"); v != "" {
			ac.Token = v
			return nil
		}
		file = os.Getenv("MGSIP_ADMIN_TOKEN_FILE")
	}
	if file == "" {
		return nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return usageErr("--token-file: %v", err)
	}
	ac.Token = strings.TrimSpace(string(b))
	return nil
}

// call performs a request; the body of a 2xx is returned. A non-2xx
// answer is exit 1 with the API's message, no answer exit 3.
func (ac *adminClient) call(ctx context.Context, method, path string, q url.Values) ([]byte, error) {
	if err := ac.resolveToken(); err != nil {
		return nil, err
	}
	body, err := ac.Do(ctx, method, path, q)
	var ue *admin.UnreachableError
	var se *admin.StatusError
	switch {
	case err == nil:
		return body, nil
	case errors.Is(err, admin.ErrBadURL):
		return nil, usageErr("--admin: %v", err)
	case errors.As(err, &ue):
		return nil, &exitError{code: exitTimeout, err: err}
	case errors.As(err, &se):
		return nil, &exitError{code: exitFailure, err: err}
	}
	return nil, err
}

func adminCtx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), 30*time.Second)
}

func table(w io.Writer, header string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ms prints a duration in milliseconds, "-" for none.
func ms(v float64) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + " ms"
}

func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}

// newListCmd lists what path returns: a table with header, one row per
// element, or the API's JSON with --json. Each filter is a flag --NAME
// sent as the query parameter NAME.
func newListCmd[T any](a *app, use, short, path, header string, row func(T) []string, filters ...string) *cobra.Command {
	ac := &adminClient{}
	values := make([]string, len(filters))
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := adminCtx(cmd)
			defer cancel()
			q := url.Values{}
			for i, f := range filters {
				if values[i] != "" {
					q.Set(f, values[i])
				}
			}
			body, err := ac.call(ctx, http.MethodGet, path, q)
			if err != nil {
				return err
			}
			if ac.json {
				_, err := a.stdout.Write(body)
				return err
			}
			var items []T
			if err := json.Unmarshal(body, &items); err != nil {
				return err
			}
			rows := make([][]string, 0, len(items))
			for _, it := range items {
				rows = append(rows, row(it))
			}
			table(a.stdout, header, rows)
			return nil
		},
	}
	addAdminFlags(c, ac)
	c.Flags().BoolVar(&ac.json, "json", false, "print the API's JSON")
	for i, f := range filters {
		c.Flags().StringVar(&values[i], f, "", "only those whose "+f+" is this")
	}
	return c
}

func newGatewaysCmd(a *app) *cobra.Command {
	return newListCmd(a, "gateways", "List gateways: address, state, RTT, retransmissions, last RSIP", "/api/v1/gateways",
		"GATEWAY\tADDRESS\tSTATE\tMGCP\tRTT\tRETRANS\tTIMEOUTS\tLAST RSIP", func(g admin.GatewayView) []string {
			state := "up"
			switch {
			case g.Down:
				state = "down"
			case g.Drained:
				state = "drained"
			}
			return []string{g.Name, g.Address, state, orDash(g.State), ms(g.RTTMS),
				fmt.Sprint(g.Retransmissions), fmt.Sprint(g.Timeouts), since(g.LastRSIP)}
		})
}

func newLinesCmd(a *app) *cobra.Command {
	return newListCmd(a, "lines", "List lines and trunk channels: hook, line state, registration", "/api/v1/lines",
		"LINE\tENDPOINT\tUSER\tHOOK\tSTATE\tREGISTRATION\tCALL", func(l bridge.LineStatus) []string {
			hook := "on"
			if l.OffHook {
				hook = "off"
			}
			reg := "-"
			if r := l.Registration; r != nil {
				reg = r.State
				if r.Reason != "" {
					reg += " (" + r.Reason + ")"
				}
			}
			call := "-"
			if l.Call != nil {
				call = l.Call.ID
			}
			return []string{l.ID, l.Endpoint, orDash(l.User), hook, l.State, reg, call}
		}, "gateway", "state")
}

func newCallsCmd(a *app) *cobra.Command {
	return newListCmd(a, "calls", "List calls in progress (one row per line involved)", "/api/v1/calls",
		"CALL\tLINE\tDIRECTION\tNUMBER\tSIP CALL-ID\tCONNECTION\tCODEC\tDURATION", func(c bridge.CallStatus) []string {
			codec := "-"
			if len(c.Codecs) > 0 {
				codec = c.Codecs[0]
			}
			dur := "-"
			if !c.Answered.IsZero() {
				dur = since(c.Answered)
			}
			return []string{c.ID, c.Line, c.Direction, orDash(c.Number), orDash(c.SIPCallID), orDash(c.ConnectionID), codec, dur}
		})
}

// newActionCmd POSTs to path and prints what was done ("drain gw: ok"),
// or the API's JSON with --json; with a param, the command's one argument
// is sent as ?param=ARG.
func newActionCmd(a *app, use, short, path, param string) *cobra.Command {
	ac := &adminClient{}
	var asJSON bool
	verb, _, _ := strings.Cut(use, " ")
	args := cobra.NoArgs
	if param != "" {
		args = cobra.ExactArgs(1)
	}
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := adminCtx(cmd)
			defer cancel()
			var q url.Values
			if param != "" {
				q = url.Values{param: {args[0]}}
			}
			body, err := ac.call(ctx, http.MethodPost, path, q)
			if err != nil {
				return err
			}
			if asJSON {
				_, err = a.stdout.Write(body)
				return err
			}
			var ans struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(body, &ans); err != nil || ans.Status == "" {
				return fmt.Errorf("%s: unexpected answer: %.200q", verb, body)
			}
			what := verb
			if len(args) > 0 {
				what += " " + args[0]
			}
			fmt.Fprintf(a.stdout, "%s: %s\n", what, ans.Status)
			return nil
		},
	}
	addAdminFlags(c, ac)
	c.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	return c
}

func adminCommands(a *app) []*cobra.Command {
	return []*cobra.Command{
		newGatewaysCmd(a), newLinesCmd(a), newCallsCmd(a), newCDRCmd(a), newPeersCmd(a), newRegistrationsCmd(a),
		newGetCmd(a, "stats", "Print the running mgsip's counters: calls, lines and registrations by state, MGCP and SIP gate", "/api/v1/stats"),
		newTraceCmd(a), newAuditCmd(a), newReloadCmd(a),
		newActionCmd(a, "reregister LINE", "Register a line's SIP account again", "/api/v1/reregister", "line"),
		newActionCmd(a, "rearm LINE", "Audit and re-arm an idle line", "/api/v1/rearm", "line"),
		newActionCmd(a, "hangup CALL", "Hang up a call (MGCP call id or SIP Call-ID)", "/api/v1/hangup", "call"),
		newActionCmd(a, "drain GATEWAY", "Stop new calls on a gateway (calls in progress go on)", "/api/v1/gateways/drain", "gateway"),
		newActionCmd(a, "disable GATEWAY", "Stop new calls on a gateway and hang up its calls", "/api/v1/gateways/disable", "gateway"),
		newActionCmd(a, "enable GATEWAY", "Take new calls on a drained or disabled gateway again", "/api/v1/gateways/enable", "gateway"),
	}
}

// newAuditCmd audits an endpoint and prints the gateway's answer as a
// table of its parameters (the API's JSON with --json).
func newAuditCmd(a *app) *cobra.Command {
	return newTableCmd(a, "audit ENDPOINT", "Audit an endpoint (line id or endpoint name) and print the gateway's answer",
		http.MethodPost, "/api/v1/audit", "endpoint")
}

// keyValues prints a JSON object as an aligned KEY VALUE table, nested
// objects as dotted keys, lists joined with commas.
func keyValues(w io.Writer, m map[string]any) error {
	var rows [][]string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, x[k])
			}
		case []any:
			parts := make([]string, 0, len(x))
			for _, e := range x {
				if b, err := json.Marshal(e); err == nil {
					parts = append(parts, strings.Trim(string(b), `"`))
				}
			}
			rows = append(rows, []string{prefix, strings.Join(parts, ", ")})
		default:
			b, _ := json.Marshal(x)
			rows = append(rows, []string{prefix, strings.Trim(string(b), `"`)})
		}
	}
	walk("", m)
	table(w, "KEY\tVALUE", rows)
	return nil
}

// newGetCmd prints what path returns as a KEY VALUE table (the API's JSON
// with --json).
func newGetCmd(a *app, use, short, path string) *cobra.Command {
	return newTableCmd(a, use, short, http.MethodGet, path, "")
}

// newTableCmd calls path with method and prints the answer (a JSON
// object) as a KEY VALUE table, or the API's JSON with --json. With a
// param, the command's one argument is sent as ?param=ARG.
func newTableCmd(a *app, use, short, method, path, param string) *cobra.Command {
	ac := &adminClient{}
	args := cobra.NoArgs
	if param != "" {
		args = cobra.ExactArgs(1)
	}
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, argv []string) error {
			ctx, cancel := adminCtx(cmd)
			defer cancel()
			var q url.Values
			if param != "" {
				q = url.Values{param: {argv[0]}}
			}
			body, err := ac.call(ctx, method, path, q)
			if err != nil {
				return err
			}
			if ac.json {
				_, err := a.stdout.Write(body)
				return err
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				return err
			}
			return keyValues(a.stdout, m)
		},
	}
	addAdminFlags(c, ac)
	c.Flags().BoolVar(&ac.json, "json", false, "print the API's JSON")
	return c
}

func newPeersCmd(a *app) *cobra.Command {
	return newListCmd(a, "peers", "List SIP peers as the OPTIONS probes see them", "/api/v1/peers",
		"PEER\tADDRESS\tUP\tSTATUS\tRTT\tLAST PROBE", func(p admin.PeerView) []string {
			up := "no"
			if p.Up {
				up = "yes"
			}
			status := "-"
			if p.Status != 0 {
				status = strconv.Itoa(p.Status)
			}
			return []string{p.Name, p.Address, up, status, ms(p.RTTMS), since(p.LastProbe)}
		})
}

// newRegistrationsCmd lists the lines' registrations.
func newRegistrationsCmd(a *app) *cobra.Command {
	ac := &adminClient{}
	c := &cobra.Command{
		Use:   "registrations",
		Short: "List the lines' SIP registrations: state, last status, expiry, failures",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := adminCtx(cmd)
			defer cancel()
			body, err := ac.call(ctx, http.MethodGet, "/api/v1/registrations", nil)
			if err != nil {
				return err
			}
			if ac.json {
				_, err := a.stdout.Write(body)
				return err
			}
			var regs map[string]bridge.RegistrationStatus
			if err := json.Unmarshal(body, &regs); err != nil {
				return err
			}
			ids := make([]string, 0, len(regs))
			for id := range regs {
				ids = append(ids, id)
			}
			sort.Slice(ids, func(i, j int) bool { return bridge.NaturalLess(ids[i], ids[j]) })
			rows := make([][]string, 0, len(ids))
			for _, id := range ids {
				r := regs[id]
				code := "-"
				if r.Code != 0 {
					code = strconv.Itoa(r.Code)
				}
				expires := "-"
				if !r.Expires.IsZero() {
					expires = time.Until(r.Expires).Round(time.Second).String()
				}
				rows = append(rows, []string{id, r.State, code, expires, strconv.Itoa(r.Failures), orDash(r.Reason)})
			}
			table(a.stdout, "LINE\tSTATE\tLAST STATUS\tEXPIRES IN\tFAILURES\tREASON", rows)
			return nil
		},
	}
	addAdminFlags(c, ac)
	c.Flags().BoolVar(&ac.json, "json", false, "print the API's JSON")
	return c
}

// newTraceCmd switches the wire traces of the running daemon.
func newTraceCmd(a *app) *cobra.Command {
	ac := &adminClient{}
	var onlyMGCP, onlySIP bool
	var lines, gateways []string
	c := &cobra.Command{
		Use:       "trace on|off|status",
		Short:     "Switch the MGCP and SIP wire traces of the running mgsip (both unless --mgcp or --sip; --line/--gateway narrow them), or show them",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"on", "off", "status"},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := adminCtx(cmd)
			defer cancel()
			var body []byte
			var err error
			switch args[0] {
			case "status":
				body, err = ac.call(ctx, http.MethodGet, "/api/v1/trace", nil)
			case "on", "off":
				q := url.Values{}
				if onlyMGCP || !onlySIP {
					q.Set("mgcp", args[0])
				}
				if onlySIP || !onlyMGCP {
					q.Set("sip", args[0])
				}
				if args[0] == "on" {
					if len(lines)+len(gateways) > 0 {
						q.Set("line", strings.Join(lines, ","))
						q.Set("gateway", strings.Join(gateways, ","))
					} else {
						q.Set("filter", "none") // on for everything
					}
				}
				body, err = ac.call(ctx, http.MethodPost, "/api/v1/trace", q)
			default:
				return usageErr("trace: %q is not on, off or status", args[0])
			}
			if err != nil {
				return err
			}
			if ac.json {
				_, err := a.stdout.Write(body)
				return err
			}
			var st admin.TraceState
			if err := json.Unmarshal(body, &st); err != nil {
				return err
			}
			onOff := func(b bool) string {
				if b {
					return "on"
				}
				return "off"
			}
			fmt.Fprintf(a.stdout, "mgcp trace %s\nsip trace %s\n", onOff(st.MGCP), onOff(st.SIP))
			if len(st.Lines)+len(st.Gateways) > 0 {
				fmt.Fprintf(a.stdout, "only lines %s, gateways %s\n", orDash(strings.Join(st.Lines, ",")), orDash(strings.Join(st.Gateways, ",")))
			}
			return nil
		},
	}
	addAdminFlags(c, ac)
	c.Flags().BoolVar(&onlyMGCP, "mgcp", false, "only the MGCP trace")
	c.Flags().BoolVar(&onlySIP, "sip", false, "only the SIP trace")
	c.Flags().BoolVar(&ac.json, "json", false, "print the API's JSON")
	c.Flags().StringSliceVar(&lines, "line", nil, "with on: trace only this line's messages (repeat or comma-separate)")
	c.Flags().StringSliceVar(&gateways, "gateway", nil, "with on: trace only this gateway's endpoints and lines")
	return c
}

// reloadAnswer is the JSON of POST /api/v1/reload (daemon.ReloadReport).
type reloadAnswer struct {
	Status string `json:"status"`
	Lines  struct {
		Added    []string            `json:"added"`
		Removed  []string            `json:"removed"`
		Changed  map[string][]string `json:"changed"`
		Deferred map[string][]string `json:"deferred"`
	} `json:"lines"`
	Applied      []string `json:"applied"`
	NeedsRestart []string `json:"needs_restart"`
	Ignored      []string `json:"ignored"`
}

func newReloadCmd(a *app) *cobra.Command {
	ac := &adminClient{}
	var asJSON bool
	c := &cobra.Command{
		Use:   "reload",
		Short: "Make the running mgsip re-read its configuration (like SIGHUP) and say what changed",
		Long: `Ask the running mgsip to re-read its configuration. A valid file is applied:
the answer lists the lines added, removed, changed (idle: the new rule
applies now) and deferred (a call in progress: when it ends), the other keys
applied, and the keys that need a restart. An invalid file is refused with
its problems and the running configuration stays.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := adminCtx(cmd)
			defer cancel()
			body, err := ac.call(ctx, http.MethodPost, "/api/v1/reload", nil)
			if err != nil {
				return err
			}
			if asJSON {
				_, err = a.stdout.Write(body)
				return err
			}
			var rep reloadAnswer
			if err := json.Unmarshal(body, &rep); err != nil {
				return fmt.Errorf("reload: unexpected answer: %w", err)
			}
			printReload(a.stdout, rep)
			return nil
		},
	}
	addAdminFlags(c, ac)
	c.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	return c
}

func printReload(w io.Writer, rep reloadAnswer) {
	fmt.Fprintf(w, "reloaded: %d line(s) added, %d removed, %d changed, %d deferred until their call ends\n",
		len(rep.Lines.Added), len(rep.Lines.Removed), len(rep.Lines.Changed), len(rep.Lines.Deferred))
	natural := func(ids []string) []string {
		ids = append([]string(nil), ids...)
		sort.SliceStable(ids, func(i, j int) bool { return bridge.NaturalLess(ids[i], ids[j]) })
		return ids
	}
	list := func(label string, ids []string) {
		if len(ids) > 0 {
			fmt.Fprintf(w, "  %s: %s\n", label, strings.Join(ids, ", "))
		}
	}
	lines := func(label string, ids []string) { list(label, natural(ids)) }
	changes := func(label string, m map[string][]string) {
		ids := make([]string, 0, len(m))
		for id := range m {
			ids = append(ids, id)
		}
		ids = natural(ids)
		for _, id := range ids {
			fmt.Fprintf(w, "  %s: %s (%s)\n", label, id, strings.Join(m[id], ", "))
		}
	}
	lines("added", rep.Lines.Added)
	lines("removed", rep.Lines.Removed)
	changes("changed", rep.Lines.Changed)
	changes("deferred", rep.Lines.Deferred)
	list("applied", rep.Applied)
	list("not applied", rep.Ignored)
	for _, k := range rep.NeedsRestart {
		fmt.Fprintf(w, "needs restart: %s\n", k)
	}
}
