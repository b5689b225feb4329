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

func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}

// newListCmd lists what path returns: a table with header, one row per
// element, or the API's JSON with --json.
func newListCmd[T any](a *app, use, short, path, header string, row func(T) []string) *cobra.Command {
	ac := &adminClient{}
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := adminCtx(cmd)
			defer cancel()
			body, err := ac.call(ctx, http.MethodGet, path, nil)
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
			return []string{g.Name, g.Address, state, orDash(g.State), orDash(g.RTT),
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
				reg = r.State.String()
				if r.Reason != "" {
					reg += " (" + r.Reason + ")"
				}
			}
			call := "-"
			if l.Call != nil {
				call = l.Call.ID
			}
			return []string{l.ID, l.Endpoint, orDash(l.User), hook, l.State, reg, call}
		})
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

// newActionCmd POSTs to path and prints the answer; with a param, the
// command's one argument is sent as ?param=ARG.
func newActionCmd(a *app, use, short, path, param string) *cobra.Command {
	ac := &adminClient{}
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
			_, err = a.stdout.Write(body)
			return err
		},
	}
	addAdminFlags(c, ac)
	return c
}

func adminCommands(a *app) []*cobra.Command {
	return []*cobra.Command{
		newGatewaysCmd(a), newLinesCmd(a), newCallsCmd(a),
		newActionCmd(a, "reload", "Make the running mgsip re-read its configuration (like SIGHUP)", "/api/v1/reload", ""),
		newActionCmd(a, "audit ENDPOINT", "Audit an endpoint (line id or endpoint name) and print the gateway's answer", "/api/v1/audit", "endpoint"),
		newActionCmd(a, "reregister LINE", "Register a line's SIP account again", "/api/v1/reregister", "line"),
		newActionCmd(a, "rearm LINE", "Audit and re-arm an idle line", "/api/v1/rearm", "line"),
		newActionCmd(a, "hangup CALL", "Hang up a call (MGCP call id or SIP Call-ID)", "/api/v1/hangup", "call"),
		newActionCmd(a, "drain GATEWAY", "Stop new calls on a gateway (calls in progress go on)", "/api/v1/gateways/drain", "gateway"),
		newActionCmd(a, "disable GATEWAY", "Stop new calls on a gateway and hang up its calls", "/api/v1/gateways/disable", "gateway"),
		newActionCmd(a, "enable GATEWAY", "Take new calls on a drained or disabled gateway again", "/api/v1/gateways/enable", "gateway"),
	}
}
