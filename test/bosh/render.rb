# Render a BOSH job's templates with real ERB, the way the director does for
# the subset cellwall uses: p("a.b") with spec defaults. Usage:
#   ruby render.rb JOB_DIR PROPERTIES_JSON OUT_DIR
require 'erb'
require 'fileutils'
require 'json'
require 'yaml'

job_dir, props_file, out_dir = ARGV
spec = YAML.load_file(File.join(job_dir, 'spec'))
props = JSON.parse(File.read(props_file))

class RenderContext
  def initialize(spec, props)
    @spec = spec
    @props = props
  end

  def p(name, *default)
    cur = @props
    found = name.split('.').all? do |k|
      next false unless cur.is_a?(Hash) && cur.key?(k)
      cur = cur[k]
      true
    end
    return cur if found
    d = @spec['properties'][name] || {}
    return d['default'] if d.key?('default')
    return default[0] unless default.empty?
    raise "Can't find property '#{name}'"
  end

  def get_binding
    binding
  end
end

ctx = RenderContext.new(spec, props)
spec['templates'].each do |src, dst|
  out = File.join(out_dir, dst)
  FileUtils.mkdir_p(File.dirname(out))
  File.write(out, ERB.new(File.read(File.join(job_dir, 'templates', src)), trim_mode: '-').result(ctx.get_binding))
  File.chmod(0o755, out) if dst.start_with?('bin/')
end
