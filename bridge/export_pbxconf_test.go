package bridge

// HeldNumber is the number of the call held beside the active call of
// the line on endpoint ep ("" for none), read on the line's goroutine.
func (b *Bridge) HeldNumber(ep string) string {
	l := b.lineByEndpoint(ep)
	ch := make(chan string, 1)
	l.postWait(func() {
		if l.other != nil {
			ch <- l.other.number
		} else {
			ch <- ""
		}
	})
	return <-ch
}
