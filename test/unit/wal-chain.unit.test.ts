import {parseTimelineHistory, verifyWalChain} from '../../src/wal/chain'

const MB16 = 16 * 1024 * 1024
const T0 = new Date('2026-11-21T10:00:00Z')
const at = (minutes: number) => new Date(T0.getTime() + minutes * 60_000)
const files = (...names: string[]) => names.map((name, index) => ({name, at: at(index)}))
const seg = (timeline: number, number: number) => `${timeline.toString(16).padStart(8, '0').toUpperCase()}00000000${number.toString(16).padStart(8, '0').toUpperCase()}`

describe('WAL chain of a base backup', () => {
  it('parses timeline history files and refuses anything else', () => {
    expect(parseTimelineHistory('1\t0/5000060\tno recovery target specified\n\n2\t0/7000000\tat restore point "x"\n')).toEqual([
      {parent: 1, switchLsn: 0x5000060n},
      {parent: 2, switchLsn: 0x7000000n},
    ])
    expect(() => parseTimelineHistory('{"not": "a history"}')).toThrow(/not a timeline history line/)
  })

  it('is complete from the first segment to the newest, and names the first missing one (ignoring .history/.backup/.partial)', () => {
    const archived = files(seg(1, 2), `${seg(1, 3)}.00000028.backup`, seg(1, 3), seg(1, 4), seg(1, 6), seg(1, 8), `${seg(1, 9)}.partial`)
    const report = verifyWalChain({firstSegment: seg(1, 3), segmentSize: MB16, archived, histories: new Map()})
    expect(report).toMatchObject({timelines: [1], last: seg(1, 8), segments: 6, firstMissing: seg(1, 5), missingCount: 2})
    const complete = verifyWalChain({firstSegment: seg(1, 3), segmentSize: MB16, archived: files(seg(1, 3), seg(1, 4)), histories: new Map()})
    expect(complete).toMatchObject({last: seg(1, 4), segments: 2, missingCount: 0})
    expect(complete.firstMissing).toBeUndefined()
  })

  it('reports the first segment when nothing of the chain is archived', () => {
    const nothing = verifyWalChain({firstSegment: seg(1, 3), segmentSize: MB16, archived: files(seg(1, 1)), histories: new Map()})
    expect(nothing).toMatchObject({firstMissing: seg(1, 3)})
    expect(nothing.last).toBeUndefined()
  })

  it('follows the timelines that branch after the backup, as recovery_target_timeline = latest does; ignores ones branched before it', () => {
    // Timeline 2 branched from 1 inside segment 5; timeline 3 from 2 inside segment 7; timeline 4 from 1 before the backup.
    const histories = new Map([
      [2, [{parent: 1, switchLsn: 0x5000100n}]],
      [3, [{parent: 1, switchLsn: 0x5000100n}, {parent: 2, switchLsn: 0x7000100n}]],
      [4, [{parent: 1, switchLsn: 0x1000000n}]],
    ])
    const archived = files(seg(1, 3), seg(1, 4), `${seg(1, 5)}.partial`, seg(2, 5), seg(2, 6), seg(3, 7), seg(3, 8), seg(4, 9))
    expect(verifyWalChain({firstSegment: seg(1, 3), segmentSize: MB16, archived, histories})).toMatchObject({
      timelines: [1, 2, 3],
      last: seg(3, 8),
      segments: 6,
      missingCount: 0,
    })
    const gap = archived.filter((file) => file.name !== seg(2, 6))
    expect(verifyWalChain({firstSegment: seg(1, 3), segmentSize: MB16, archived: gap, histories})).toMatchObject({firstMissing: seg(2, 6), missingCount: 1})
  })

  it('flags a parent timeline that kept archiving after a child branched (a drill archiving into production), not a past point-in-time restore', () => {
    const histories = new Map([[2, [{parent: 1, switchLsn: 0x4000100n}]]])
    // Point-in-time restore into the past: segments 5 and 6 of timeline 1 were stored before 00000002.history.
    const pastRestore = [
      ...files(seg(1, 3), seg(1, 4), seg(1, 5), seg(1, 6)),
      {name: '00000002.history', at: at(10)},
      {name: seg(2, 4), at: at(11)},
    ]
    expect(verifyWalChain({firstSegment: seg(1, 3), segmentSize: MB16, archived: pastRestore, histories}).divergence).toBeUndefined()
    // A drill: timeline 1 (production) keeps archiving segment 7 after the drill's history appeared.
    const drill = [...pastRestore, {name: seg(1, 7), at: at(12)}]
    expect(verifyWalChain({firstSegment: seg(1, 3), segmentSize: MB16, archived: drill, histories}).divergence).toEqual({
      timeline: 1,
      branchedAt: seg(1, 4),
      child: 2,
      newestOnParent: seg(1, 7),
    })
  })

  it('counts segment numbers across a log-file boundary', () => {
    const last = '0000000100000001000000FF'
    const next = '000000010000000200000000'
    expect(verifyWalChain({firstSegment: last, segmentSize: MB16, archived: files(last, next), histories: new Map()})).toMatchObject({segments: 2, missingCount: 0})
  })
})
