"""What every part of rezcty uses: where files live, image I/O, term blocklists.

Entry points: `paths.embedded_dir()`, `imageio.load_image_rgb()`,
`blocklists.load_blocklist()`.
"""
