import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

/**
 * Creates objects straight in s3rver's directory, in the layout its filesystem store reads
 * (`<bucket>/<key>._S3rver_object` and its `.md5`), so a test or bench can have an archive of
 * 100,000 WAL keys in seconds instead of 100,000 PUT requests. Listing, HEAD, GET and DELETE of
 * these objects then go through s3rver's real S3 protocol like any other.
 */
export async function plantS3rverObjects(directory: string, bucket: string, objects: Iterable<{key: string; body: Buffer}>, concurrency = 64): Promise<number> {
  const queue = [...objects]
  const made = new Set<string>()
  let planted = 0
  const worker = async () => {
    for (let object = queue.shift(); object !== undefined; object = queue.shift()) {
      const file = path.join(directory, bucket, `${object.key}._S3rver_object`)
      const parent = path.dirname(file)
      if (!made.has(parent)) {
        await fs.mkdir(parent, {recursive: true})
        made.add(parent)
      }

      await fs.writeFile(file, object.body)
      await fs.writeFile(`${file}.md5`, createHash('md5').update(object.body).digest('hex'))
      planted += 1
    }
  }

  await Promise.all(Array.from({length: concurrency}, worker))
  return planted
}
