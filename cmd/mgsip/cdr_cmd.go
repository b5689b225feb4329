package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mgsip/mgsip/bridge"
)

// newCDRCmd prints call detail records from the running daemon; with
// --follow it keeps printing them as calls end.
func newCDRCmd(a *app) *cobra.Command {
	ac := &adminClient{}
	var sinceFlag string
	var follow bool
	var limit int
	c := &cobra.Command{
		Use:   "cdr",
		Short: "Print call detail records (one per call leg); --follow prints them as calls end",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var since time.Time
			if sinceFlag != "" {
				if d, err := time.ParseDuration(sinceFlag); err == nil {
					since = time.Now().Add(-d)
				} else if t, err := time.Parse(time.RFC3339Nano, sinceFlag); err == nil {
					since = t
				} else {
					return usageErr("--since: %q is neither a duration (1h) nor an RFC 3339 time", sinceFlag)
				}
			}
			var after uint64 // the seq of the last record printed
			header := true
			for {
				q := url.Values{"limit": {strconv.Itoa(limit)}}
				if !since.IsZero() {
					q.Set("since", since.UTC().Format(time.RFC3339Nano))
				}
				if after > 0 {
					q.Set("after", strconv.FormatUint(after, 10))
				}
				ctx, cancel := adminCtx(cmd)
				if follow {
					q.Set("wait", "25s")
					ctx, cancel = context.WithTimeout(cmd.Context(), 40*time.Second)
				}
				body, err := ac.call(ctx, http.MethodGet, "/api/v1/cdr", q)
				cancel()
				if err != nil {
					if follow && cmd.Context().Err() != nil {
						return nil // interrupted
					}
					return err
				}
				var recs []bridge.CDR
				if err := json.Unmarshal(body, &recs); err != nil {
					return err
				}
				for _, r := range recs {
					after = max(after, r.Seq)
				}
				if !follow || len(recs) > 0 {
					printCDRs(a, recs, ac.json, header)
					header = false
				}
				if !follow {
					return nil
				}
				if len(recs) == 0 && after == 0 {
					// Nothing recorded yet: the next answer waits (wait=);
					// a daemon without seq numbers would loop, so pause.
					select {
					case <-cmd.Context().Done():
						return nil
					case <-time.After(time.Second):
					}
				}
			}
		},
	}
	addAdminFlags(c, ac)
	c.Flags().BoolVar(&ac.json, "json", false, "print one JSON record per line")
	c.Flags().StringVar(&sinceFlag, "since", "", "only calls that ended after this time (RFC 3339) or this long ago (1h)")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing records as calls end (Ctrl-C stops)")
	c.Flags().IntVar(&limit, "limit", 1000, "at most this many records per request (the newest)")
	return c
}

func printCDRs(a *app, recs []bridge.CDR, asJSON, header bool) {
	if asJSON {
		for _, r := range recs {
			b, _ := json.Marshal(r)
			fmt.Fprintln(a.stdout, string(b))
		}
		return
	}
	rows := make([][]string, 0, len(recs))
	for _, r := range recs {
		talk := "-"
		if r.Answered {
			talk = (time.Duration(r.TalkMS) * time.Millisecond).Round(100 * time.Millisecond).String()
		}
		status := "-"
		if r.SIPStatus != 0 {
			status = strconv.Itoa(r.SIPStatus)
		}
		rows = append(rows, []string{time.Time(r.End).UTC().Format("2006-01-02 15:04:05.000"), r.Line, r.Direction,
			orDash(r.Calling), orDash(r.Called), r.Result, status, strconv.Itoa(r.Q850Cause), talk, orDash(r.SIPCallID)})
	}
	if header {
		table(a.stdout, "END (UTC)\tLINE\tDIRECTION\tCALLING\tCALLED\tRESULT\tSIP\tCAUSE\tTALK\tSIP CALL-ID", rows)
		return
	}
	for _, r := range rows { // --follow after the first batch
		fmt.Fprintln(a.stdout, strings.Join(r, "  "))
	}
}
