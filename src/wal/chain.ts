import {parseLsn, walFileKind} from './segments'

/**
 * The WAL chain a base backup needs: every segment from its first one to the newest archived one,
 * on its timeline and on the timelines that follow from it, as recovery with
 * recovery_target_timeline = 'latest' would read them. Pure: the caller lists the archive and
 * reads the timeline history files.
 */

/** One line of a timeline history file (`<parent timeline>\t<switch LSN>\t<reason>`): the parent ended at switchLsn. */
export interface TimelineSwitch {
  parent: number
  switchLsn: bigint
}

/** A `TTTTTTTT.history` file's content (comments and blank lines skipped); throws on anything else. */
export function parseTimelineHistory(text: string): TimelineSwitch[] {
  const switches: TimelineSwitch[] = []
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const match = /^(\d+)\s+([0-9A-F]{1,8}\/[0-9A-F]{1,8})(\s|$)/i.exec(line)
    if (!match) throw new Error(`not a timeline history line: "${line.slice(0, 80)}"`)
    switches.push({parent: Number(match[1]), switchLsn: parseLsn(match[2])})
  }

  return switches
}

export function timelineOfName(name: string): number {
  return Number.parseInt(name.slice(0, 8), 16)
}

export function historyFileName(timeline: number): string {
  return `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`
}

function segmentsPerLogId(segmentSize: number): bigint {
  return 0x1_0000_0000n / BigInt(segmentSize)
}

/** A segment name's number in the WAL stream (timeline ignored). */
export function segmentNumber(name: string, segmentSize: number): bigint {
  return BigInt(`0x${name.slice(8, 16)}`) * segmentsPerLogId(segmentSize) + BigInt(`0x${name.slice(16, 24)}`)
}

export function segmentName(timeline: number, number: bigint, segmentSize: number): string {
  const perLog = segmentsPerLogId(segmentSize)
  return [BigInt(timeline), number / perLog, number % perLog].map((part) => part.toString(16).toUpperCase().padStart(8, '0')).join('')
}

export interface WalChainInput {
  /** The base backup's first WAL segment (its timeline is where the chain starts). */
  firstSegment: string
  segmentSize: number
  /** Every WAL file in the archive (segments, .history, .backup, .partial) and when it was stored. */
  archived: Iterable<{name: string; at: Date}>
  /** Parsed history files, by the timeline they describe. */
  histories: ReadonlyMap<number, TimelineSwitch[]>
}

export interface WalChainReport {
  /** The timelines recovery follows from the base backup, in order. */
  timelines: number[]
  /** The newest segment of the chain in the archive, if any. */
  last?: string
  /** How many segments the chain has from the first to `last`. */
  segments: number
  /** The first segment of the chain that is not archived. */
  firstMissing?: string
  missingCount: number
  /**
   * A timeline of the chain that kept archiving segments past the point where a later timeline
   * branched off it, after that branch was created: two clusters wrote at once (a restore drill
   * that archived into production's location, or a split brain). Recovery with target `latest`
   * follows the newer timeline and skips these writes. (Segments past the branch point stored
   * before the branch are normal: a point-in-time restore into the past.)
   */
  divergence?: {timeline: number; branchedAt: string; child: number; newestOnParent: string}
}

export function verifyWalChain(input: WalChainInput): WalChainReport {
  const {segmentSize} = input
  const startTimeline = timelineOfName(input.firstSegment)
  const start = segmentNumber(input.firstSegment, segmentSize)
  const segmentsByTimeline = new Map<number, Map<bigint, Date>>()
  const historyStored = new Map<number, Date>()
  for (const {name, at} of input.archived) {
    const kind = walFileKind(name)
    if (kind === 'history') historyStored.set(timelineOfName(name), at)
    if (kind !== 'segment') continue
    const timeline = timelineOfName(name)
    if (!segmentsByTimeline.has(timeline)) segmentsByTimeline.set(timeline, new Map())
    segmentsByTimeline.get(timeline)!.set(segmentNumber(name, segmentSize), at)
  }

  // The timelines that follow from the backup: their history passes through its timeline after its start.
  const switchSegment = (lsn: bigint) => lsn / BigInt(segmentSize)
  let target = startTimeline
  let path: {timeline: number; begin: bigint}[] = [{timeline: startTimeline, begin: start}]
  for (const [timeline, history] of input.histories) {
    if (timeline <= target) continue
    const index = history.findIndex((entry) => entry.parent === startTimeline)
    if (index === -1 || switchSegment(history[index].switchLsn) < start) continue
    target = timeline
    const later = history.slice(index + 1).map((entry, offset) => ({timeline: entry.parent, begin: switchSegment(history[index + offset].switchLsn)}))
    path = [{timeline: startTimeline, begin: start}, ...later, {timeline, begin: switchSegment(history.at(-1)!.switchLsn)}]
  }

  const timelineAt = (number: bigint) => {
    let current = path[0].timeline
    for (const step of path) if (step.begin <= number) current = step.timeline
    return current
  }

  let last: bigint | undefined
  for (const [index, step] of path.entries()) {
    const end = path[index + 1]?.begin
    for (const number of segmentsByTimeline.get(step.timeline)?.keys() ?? []) {
      if (number < step.begin || (end !== undefined && number > end)) continue
      if (timelineAt(number) === step.timeline && (last === undefined || number > last)) last = number
    }
  }

  const report: WalChainReport = {timelines: path.map((step) => step.timeline), segments: 0, missingCount: 0}
  for (const [index, step] of path.slice(0, -1).entries()) {
    const child = path[index + 1]
    const branchCreated = historyStored.get(child.timeline)
    if (branchCreated === undefined) continue
    const after = [...(segmentsByTimeline.get(step.timeline) ?? [])]
      .filter(([number, at]) => number > child.begin && at > branchCreated)
      .map(([number]) => number)
      .sort((a, b) => (a < b ? -1 : 1))
    if (after.length > 0) {
      report.divergence = {
        timeline: step.timeline,
        branchedAt: segmentName(step.timeline, child.begin, segmentSize),
        child: child.timeline,
        newestOnParent: segmentName(step.timeline, after.at(-1)!, segmentSize),
      }
      break
    }
  }

  if (last === undefined) {
    report.firstMissing = input.firstSegment
    report.missingCount = 1
    return report
  }

  report.last = segmentName(timelineAt(last), last, segmentSize)
  for (let number = start; number <= last; number += 1n) {
    report.segments += 1
    const timeline = timelineAt(number)
    if (segmentsByTimeline.get(timeline)?.has(number)) continue
    report.missingCount += 1
    report.firstMissing ??= segmentName(timeline, number, segmentSize)
  }

  return report
}
